#include "sockets.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

namespace postwarden {

namespace {

constexpr int kReadable = 1;
constexpr int kWritable = 2;
constexpr size_t kMaxPeek = 65536;
// Numbers per result: descriptor, generation, status, events.
constexpr size_t kEventSlots = 4;

// Receives without blocking, retrying EINTR; returns recv()'s result.
ssize_t Receive(int fd, char* buffer, size_t size, int flags) {
  ssize_t n;
  do {
    n = recv(fd, buffer, size, flags | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n;
}

// The pending bytes as a Buffer: null when none, empty at end of stream.
Napi::Value Pending(Napi::Env env, int fd, size_t max, int flags) {
  if (max == 0 || max > kMaxPeek) max = kMaxPeek;
  char buffer[kMaxPeek];
  ssize_t n = Receive(fd, buffer, max, flags);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw SystemError(env, errno, "recv");
  }
  return Napi::Buffer<char>::Copy(env, buffer, static_cast<size_t>(n));
}

}  // namespace

Napi::Function Sockets::Init(Napi::Env env) {
  return DefineClass(env, "Sockets",
                     {
                         InstanceMethod<&Sockets::WatchFd>("watch"),
                         InstanceMethod<&Sockets::Unwatch>("unwatch"),
                         InstanceMethod<&Sockets::Peek>("peek"),
                         InstanceMethod<&Sockets::Read>("read"),
                         InstanceMethod<&Sockets::Discard>("discard"),
                         InstanceMethod<&Sockets::Write>("write"),
                         InstanceMethod<&Sockets::SendFd>("sendFd"),
                         InstanceMethod<&Sockets::ReceiveFd>("receiveFd"),
                         InstanceMethod<&Sockets::Release>("release"),
                         InstanceMethod<&Sockets::CloseFd>("closeFd"),
                         InstanceMethod<&Sockets::Shutdown>("shutdown"),
                         InstanceMethod<&Sockets::Close>("close"),
                     });
}

// new Sockets(events, onEvents): `events` is a Float64Array that receives
// four numbers per readiness result, and onEvents(count) is called after
// each batch.
Sockets::Sockets(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Sockets>(info),
      ready_(info, "Sockets", kEventSlots, this, OnPoll) {}

Sockets::~Sockets() { CloseAll(); }

// Stops watching; the descriptors stay open, as they belong to JavaScript.
void Sockets::CloseAll() {
  ready_.Close();
  watches_.clear();
  armed_ = 0;
}

int Sockets::Descriptor(const Napi::CallbackInfo& info,
                        const char* syscall) const {
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) throw SystemError(info.Env(), EBADF, syscall, "socket is closed");
  return fd;
}

Sockets::Watch* Sockets::Find(int fd) {
  if (fd < 0 || static_cast<size_t>(fd) >= watches_.size()) return nullptr;
  return &watches_[fd];
}

void Sockets::Disarm(Watch& watch) {
  if (!watch.armed) return;
  watch.armed = false;
  armed_--;
}

// Takes a descriptor out of the epoll set. This must happen before it is
// closed or given away: a copy held elsewhere (smtpd's, after a hand-off)
// would otherwise keep it in the set.
void Sockets::Forget(int fd) {
  Watch* watch = Find(fd);
  if (watch == nullptr || !watch->registered) return;
  Disarm(*watch);
  watch->registered = false;
  if (ready_.fd() >= 0) epoll_ctl(ready_.fd(), EPOLL_CTL_DEL, fd, nullptr);
  ready_.Reference(armed_ > 0);
}

// watch(fd, events) reports once when the socket is readable (1), writable
// (2) or in error, and returns the watch's generation, which the result
// carries. Watches are one-shot because a level-triggered watch on peeked,
// unread data fires without end. A new watch replaces a pending one.
Napi::Value Sockets::WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Descriptor(info, "epoll_ctl");
  int epollFd = ready_.fd();
  if (epollFd < 0) throw SystemError(env, EBADF, "epoll_ctl", "closed");
  int requested = info[1].As<Napi::Number>().Int32Value();
  epoll_event event{};
  event.events = EPOLLONESHOT;
  if (requested & kReadable) event.events |= EPOLLIN | EPOLLRDHUP;
  if (requested & kWritable) event.events |= EPOLLOUT;
  if ((requested & (kReadable | kWritable)) == 0) {
    throw Napi::TypeError::New(env, "watch: events must be 1, 2 or 3");
  }
  if (static_cast<size_t>(fd) >= watches_.size()) watches_.resize(fd + 1);
  Watch& watch = watches_[fd];
  watch.requested = requested & (kReadable | kWritable);
  if (watch.registered) {
    event.data.u64 = (static_cast<uint64_t>(watch.generation) << 32) | fd;
    if (epoll_ctl(epollFd, EPOLL_CTL_MOD, fd, &event) < 0) {
      // Closed elsewhere since, which took it out of the set.
      if (errno != ENOENT) throw SystemError(env, errno, "epoll_ctl");
      watch.registered = false;
      Disarm(watch);
    }
  }
  if (!watch.registered) {
    watch.generation++;
    event.data.u64 = (static_cast<uint64_t>(watch.generation) << 32) | fd;
    if (epoll_ctl(epollFd, EPOLL_CTL_ADD, fd, &event) < 0) {
      throw SystemError(env, errno, "epoll_ctl");
    }
    watch.registered = true;
  }
  if (!watch.armed) {
    watch.armed = true;
    armed_++;
  }
  ready_.Reference(true);
  return Napi::Number::New(env, watch.generation);
}

// unwatch(fd): cancels a pending watch; nothing is reported for it.
Napi::Value Sockets::Unwatch(const Napi::CallbackInfo& info) {
  Forget(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// peek(fd, max): pending bytes without consuming them (MSG_PEEK).
Napi::Value Sockets::Peek(const Napi::CallbackInfo& info) {
  int fd = Descriptor(info, "recv");
  size_t max = info[1].As<Napi::Number>().Uint32Value();
  return Pending(info.Env(), fd, max, MSG_PEEK);
}

// read(fd, max): consumes pending bytes. Used on the channel to smtpd and
// on a PROXY header, never on a client's SMTP bytes.
Napi::Value Sockets::Read(const Napi::CallbackInfo& info) {
  int fd = Descriptor(info, "recv");
  size_t max = info[1].As<Napi::Number>().Uint32Value();
  return Pending(info.Env(), fd, max, 0);
}

// discard(fd): reads and drops everything pending, so that closing a
// rejected client sends a FIN and not an RST that could destroy the last
// reply. Returns the number of bytes dropped, or -1 at end of stream or on
// error.
Napi::Value Sockets::Discard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Descriptor(info, "recv");
  char buffer[16384];
  double total = 0;
  // At most 4 MiB per call, so one client cannot hold the loop for long.
  for (int rounds = 0; rounds < 256; rounds++) {
    ssize_t n = Receive(fd, buffer, sizeof(buffer), 0);
    if (n > 0) {
      total += n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return Napi::Number::New(env, -1);
  }
  return Napi::Number::New(env, total);
}

// write(fd, buffer): sends without blocking and without SIGPIPE. Returns
// the number of bytes sent, 0 when the send buffer is full.
Napi::Value Sockets::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Descriptor(info, "send");
  Napi::Buffer<char> data = info[1].As<Napi::Buffer<char>>();
  ssize_t n;
  do {
    n = send(fd, data.Data(), data.Length(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return Napi::Number::New(env, 0);
    throw SystemError(env, errno, "send");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// sendFd(fd, other): sends one data byte (0x00) carrying the descriptor
// `other` as SCM_RIGHTS, the first message of Postfix's pass protocol.
// Returns false when the channel cannot take it now (EAGAIN,
// ETOOMANYREFS): wait until writable and try again.
Napi::Value Sockets::SendFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Descriptor(info, "sendmsg");
  int other = info[1].As<Napi::Number>().Int32Value();
  if (other < 0) {
    throw SystemError(env, EBADF, "sendmsg", "passed socket is closed");
  }
  int err = SendDescriptor(fd, other);
  if (err == EAGAIN || err == EWOULDBLOCK || err == ETOOMANYREFS) {
    return Napi::Boolean::New(env, false);
  }
  if (err != 0) throw SystemError(env, err, "sendmsg");
  return Napi::Boolean::New(env, true);
}

// receiveFd(fd): the receiving side of sendFd(), as smtpd does it: reads
// one byte and exactly one descriptor. Returns the new descriptor, or null
// when nothing is pending. Rejects truncated control data.
Napi::Value Sockets::ReceiveFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Descriptor(info, "recvmsg");
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
    n = recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
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
      int received;
      memcpy(&received, CMSG_DATA(header), sizeof(int));
      close(received);
    }
    throw SystemError(env, EPROTO, "recvmsg", "no single descriptor received");
  }
  int received;
  memcpy(&received, CMSG_DATA(header), sizeof(int));
  return Napi::Number::New(env, received);
}

// release(fd): stops watching a descriptor that gets a new owner (a
// net.Socket, for example), without closing it.
Napi::Value Sockets::Release(const Napi::CallbackInfo& info) {
  Forget(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// closeFd(fd): stops any watch and closes the descriptor with close()
// only. shutdown() is never used here: on a handed-off client it would end
// the session that smtpd now owns.
Napi::Value Sockets::CloseFd(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd >= 0) {
    Forget(fd);
    close(fd);
  }
  return info.Env().Undefined();
}

// shutdown(fd): ends the connection for every holder of the descriptor
// (SHUT_RDWR). Only for a hand-off that smtpd never took: the descriptor
// may still sit in the pass socket's queue, and without this the client
// would wait on a connection that no process serves.
Napi::Value Sockets::Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Descriptor(info, "shutdown");
  if (shutdown(fd, SHUT_RDWR) < 0 && errno != ENOTCONN) {
    throw SystemError(env, errno, "shutdown");
  }
  return env.Undefined();
}

// close(): stops watching every descriptor; the object is unusable after.
Napi::Value Sockets::Close(const Napi::CallbackInfo& info) {
  CloseAll();
  return info.Env().Undefined();
}

// Results keep the shape of a libuv poll callback: a status that is 0, or
// -EIO when the socket is in error (a reset, for example), and the events
// seen. A hang-up is reported as readable, so that the reader
// finds the end of stream.
void Sockets::Report(int fd, int status, int events) {
  double* slot = ready_.NextSlot();
  slot[0] = fd;
  slot[1] = watches_[fd].generation;
  slot[2] = status;
  slot[3] = events;
}

void Sockets::HandleReady(const epoll_event& event) {
  int fd = static_cast<int>(event.data.u64 & 0xffffffffu);
  auto generation = static_cast<uint32_t>(event.data.u64 >> 32);
  Watch* watch = Find(fd);
  // Forgotten, re-added for a newer socket, or reported already.
  if (watch == nullptr || !watch->registered || !watch->armed ||
      watch->generation != generation) {
    return;
  }
  Disarm(*watch);
  // The error itself stays pending, for the caller's next call to see.
  int status = (event.events & EPOLLERR) ? -EIO : 0;
  int reported = 0;
  if (event.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) reported |= kReadable;
  if (event.events & (EPOLLOUT | EPOLLHUP)) reported |= kWritable;
  Report(fd, status, reported & watch->requested);
}

void Sockets::OnPoll(uv_poll_t* handle, int status, int) {
  auto* self = static_cast<Sockets*>(handle->data);
  if (self == nullptr || status < 0) return;
  self->ready_.Drain(
      [self](const epoll_event& event) { self->HandleReady(event); });
  self->ready_.Reference(self->armed_ > 0);
}

}  // namespace postwarden
