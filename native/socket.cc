#include "socket.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

namespace postwarden {

namespace {
constexpr int kReadable = 1;
constexpr int kWritable = 2;
constexpr size_t kMaxPeek = 65536;
}  // namespace

Napi::Function Socket::Init(Napi::Env env) {
  return DefineClass(env, "Socket",
                     {
                         InstanceAccessor<&Socket::GetFd>("fd"),
                         InstanceMethod<&Socket::Watch>("watch"),
                         InstanceMethod<&Socket::Unwatch>("unwatch"),
                         InstanceMethod<&Socket::Peek>("peek"),
                         InstanceMethod<&Socket::Read>("read"),
                         InstanceMethod<&Socket::Discard>("discard"),
                         InstanceMethod<&Socket::Write>("write"),
                         InstanceMethod<&Socket::SendFd>("sendFd"),
                         InstanceMethod<&Socket::ReceiveFd>("receiveFd"),
                         InstanceMethod<&Socket::Release>("release"),
                         InstanceMethod<&Socket::Close>("close"),
                         InstanceMethod<&Socket::Shutdown>("shutdown"),
                     });
}

Napi::Object Socket::Wrap(Napi::Env env, int fd) {
  return GetAddonData(env)->socketConstructor.New({Napi::Number::New(env, fd)});
}

Socket::Socket(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Socket>(info) {
  fd_ = info[0].As<Napi::Number>().Int32Value();
}

// A socket that JavaScript dropped without closing is closed here, so a
// forgotten client cannot leak its descriptor.
Socket::~Socket() {
  ClosePollHandle();
  if (fd_ >= 0) close(fd_);
}

void Socket::CheckOpen(Napi::Env env, const char* syscall) const {
  if (fd_ < 0) throw SystemError(env, EBADF, syscall, "socket is closed");
}

Napi::Value Socket::GetFd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), fd_);
}

// watch(events, callback): calls callback(status, events) once, when the
// socket is readable (1), writable (2) or in error. Watches are one-shot
// because a level-triggered watch on peeked, unread data fires without end.
// status is 0 or a negative libuv error; a reset may come with data that can
// still be peeked, and the caller should treat it as a dead connection.
Napi::Value Socket::Watch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "uv_poll_start");
  int requested = info[0].As<Napi::Number>().Int32Value();
  int events = 0;
  if (requested & kReadable) events |= UV_READABLE | UV_DISCONNECT;
  if (requested & kWritable) events |= UV_WRITABLE;
  if (events == 0) {
    throw Napi::TypeError::New(env, "watch: events must be 1, 2 or 3");
  }
  if (!info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "watch: callback must be a function");
  }
  if (poll_ == nullptr) {
    poll_ = new uv_poll_t;
    int rc = uv_poll_init_socket(GetAddonData(env)->loop, poll_, fd_);
    if (rc < 0) {
      delete poll_;
      poll_ = nullptr;
      throw SystemError(env, -rc, "uv_poll_init_socket");
    }
    poll_->data = this;
  }
  int rc = uv_poll_start(poll_, events, OnPoll);
  if (rc < 0) throw SystemError(env, -rc, "uv_poll_start");
  callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  if (!watching_) {
    watching_ = true;
    Ref();  // The pending callback keeps this object alive.
  }
  return env.Undefined();
}

void Socket::StopWatching() {
  if (poll_ != nullptr) uv_poll_stop(poll_);
  if (watching_) {
    watching_ = false;
    callback_.Reset();
    Unref();
  }
}

// Stops and closes the poll handle. It must happen before the descriptor is
// closed or adopted by another owner: libuv aborts, or the new owner goes
// deaf, when a poll handle outlives its descriptor.
void Socket::ClosePollHandle() {
  if (poll_ == nullptr) return;
  uv_poll_stop(poll_);
  poll_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* handle) {
    delete reinterpret_cast<uv_poll_t*>(handle);
  });
  poll_ = nullptr;
}

void Socket::OnPoll(uv_poll_t* handle, int status, int events) {
  auto* self = static_cast<Socket*>(handle->data);
  if (self == nullptr || !self->watching_) {
    // No callback is pending: a level-triggered poll must not stay active.
    uv_poll_stop(handle);
    return;
  }
  uv_poll_stop(handle);

  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  Napi::Function callback = self->callback_.Value();
  Napi::Object receiver = self->Value();
  self->watching_ = false;
  self->callback_.Reset();

  int reported = 0;
  if (events & (UV_READABLE | UV_DISCONNECT)) reported |= kReadable;
  if (events & UV_WRITABLE) reported |= kWritable;
  CallFromLoop(
      env, callback, receiver,
      {Napi::Number::New(env, status), Napi::Number::New(env, reported)});
  // The callback may have closed this socket or armed a new watch; only the
  // reference taken for the finished watch is dropped here.
  self->Unref();
}

Napi::Value Socket::Unwatch(const Napi::CallbackInfo& info) {
  StopWatching();
  return info.Env().Undefined();
}

// peek(max): pending bytes without consuming them (MSG_PEEK). Returns null
// when nothing is pending and an empty Buffer at end of stream.
Napi::Value Socket::Peek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "recv");
  size_t max = info[0].As<Napi::Number>().Uint32Value();
  if (max == 0 || max > kMaxPeek) max = kMaxPeek;
  char buffer[kMaxPeek];
  ssize_t n;
  do {
    n = recv(fd_, buffer, max, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw SystemError(env, errno, "recv");
  }
  return Napi::Buffer<char>::Copy(env, buffer, static_cast<size_t>(n));
}

// read(max): consumes pending bytes. Same results as peek(). Used on the
// channel to smtpd, never on a client that may still be handed off.
Napi::Value Socket::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "recv");
  size_t max = info[0].As<Napi::Number>().Uint32Value();
  if (max == 0 || max > kMaxPeek) max = kMaxPeek;
  char buffer[kMaxPeek];
  ssize_t n;
  do {
    n = recv(fd_, buffer, max, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw SystemError(env, errno, "recv");
  }
  return Napi::Buffer<char>::Copy(env, buffer, static_cast<size_t>(n));
}

// discard(): reads and drops everything pending, so that closing a rejected
// client sends a FIN and not an RST that could destroy the last reply.
// Returns the number of bytes dropped, or -1 at end of stream or on error.
Napi::Value Socket::Discard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "recv");
  char buffer[16384];
  double total = 0;
  // At most 4 MiB per call, so one client cannot hold the loop for long.
  for (int rounds = 0; rounds < 256; rounds++) {
    ssize_t n = recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      total += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return Napi::Number::New(env, -1);
  }
  return Napi::Number::New(env, total);
}

// write(buffer): sends without blocking and without SIGPIPE. Returns the
// number of bytes sent, 0 when the send buffer is full.
Napi::Value Socket::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "send");
  Napi::Buffer<char> data = info[0].As<Napi::Buffer<char>>();
  ssize_t n;
  do {
    n = send(fd_, data.Data(), data.Length(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return Napi::Number::New(env, 0);
    throw SystemError(env, errno, "send");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// sendFd(other): sends one data byte (0x00) carrying other's descriptor as
// SCM_RIGHTS, the first message of Postfix's pass protocol. Returns false
// when the channel cannot take it now (EAGAIN, ETOOMANYREFS): wait until
// writable and try again.
Napi::Value Socket::SendFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "sendmsg");
  Socket* other = Napi::ObjectWrap<Socket>::Unwrap(info[0].As<Napi::Object>());
  if (other->fd_ < 0)
    throw SystemError(env, EBADF, "sendmsg", "passed socket is closed");

  int err = SendDescriptor(fd_, other->fd_);
  if (err == EAGAIN || err == EWOULDBLOCK || err == ETOOMANYREFS) {
    return Napi::Boolean::New(env, false);
  }
  if (err != 0) throw SystemError(env, err, "sendmsg");
  return Napi::Boolean::New(env, true);
}

// receiveFd(): the receiving side of sendFd(), as smtpd does it: reads one
// byte and exactly one descriptor. Returns a Socket for the descriptor, or
// null when nothing is pending. Rejects truncated control data.
Napi::Value Socket::ReceiveFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "recvmsg");
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(fd_, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw SystemError(env, errno, "recvmsg");
  }
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  bool valid = n == 1 && (message.msg_flags & MSG_CTRUNC) == 0 &&
               header != nullptr && header->cmsg_level == SOL_SOCKET &&
               header->cmsg_type == SCM_RIGHTS &&
               header->cmsg_len == CMSG_LEN(sizeof(int));
  if (!valid) {
    if (header != nullptr && header->cmsg_type == SCM_RIGHTS) {
      int fd;
      memcpy(&fd, CMSG_DATA(header), sizeof(int));
      close(fd);
    }
    throw SystemError(env, EPROTO, "recvmsg", "no single descriptor received");
  }
  int fd;
  memcpy(&fd, CMSG_DATA(header), sizeof(int));
  return Wrap(env, fd);
}

// release(): gives the descriptor away (to a net.Socket, for example) and
// forgets it, so this object can never close a descriptor it no longer owns.
Napi::Value Socket::Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "release");
  StopWatching();
  ClosePollHandle();
  int fd = fd_;
  fd_ = -1;
  return Napi::Number::New(env, fd);
}

// close(): stops any watch and closes the descriptor with close() only.
// shutdown() is never used: on a handed-off client it would end the
// session that smtpd now owns.
Napi::Value Socket::Close(const Napi::CallbackInfo& info) {
  StopWatching();
  ClosePollHandle();
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  return info.Env().Undefined();
}

// shutdown(): ends the connection for every holder of the descriptor
// (SHUT_RDWR). Only for a hand-off that smtpd never took: the descriptor
// may still sit in the pass socket's queue, and without this the client
// would wait on a connection nobody serves.
Napi::Value Socket::Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env, "shutdown");
  if (shutdown(fd_, SHUT_RDWR) < 0 && errno != ENOTCONN) {
    throw SystemError(env, errno, "shutdown");
  }
  return env.Undefined();
}

}  // namespace postwarden
