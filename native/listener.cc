#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

namespace postwarden {

Napi::Function Listener::Init(Napi::Env env) {
  return DefineClass(env, "Listener",
                     {
                         InstanceMethod<&Listener::Start>("start"),
                         InstanceMethod<&Listener::Pause>("pause"),
                         InstanceMethod<&Listener::Close>("close"),
                         InstanceMethod<&Listener::Address>("address"),
                     });
}

// new Listener(host, port, backlog, acceptLimit, onConnection, onError)
// binds and listens at once, so that address errors surface at startup.
// IPv6 sockets are IPv6-only, so "0.0.0.0" and "::" can listen side by side
// on the same port. The kernel caps backlog at net.core.somaxconn.
Listener::Listener(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Listener>(info) {
  Napi::Env env = info.Env();
  std::string host = info[0].As<Napi::String>().Utf8Value();
  int port = info[1].As<Napi::Number>().Int32Value();
  int backlog = info[2].As<Napi::Number>().Int32Value();
  acceptLimit_ = info[3].As<Napi::Number>().Int32Value();
  if (acceptLimit_ < 1) acceptLimit_ = 1;
  onConnection_ = Napi::Persistent(info[4].As<Napi::Function>());
  onError_ = Napi::Persistent(info[5].As<Napi::Function>());
  if (port < 0 || port > 65535) {
    throw SystemError(env, EINVAL, "bind", "port out of range");
  }

  sockaddr_storage addr{};
  socklen_t length;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof(sockaddr_in6);
  } else {
    throw SystemError(env, EINVAL, "bind", "not a numeric address: " + host);
  }

  int fd =
      socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw SystemError(env, errno, "socket");
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (addr.ss_family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), length) < 0) {
    int err = errno;
    close(fd);
    throw SystemError(env, err, "bind", host + " port " + std::to_string(port));
  }
  if (listen(fd, backlog) < 0) {
    int err = errno;
    close(fd);
    throw SystemError(env, err, "listen");
  }
  fd_ = fd;
}

Listener::~Listener() {
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* handle) {
      delete reinterpret_cast<uv_poll_t*>(handle);
    });
  }
  if (fd_ >= 0) close(fd_);
}

// start(): begins (or resumes) accepting. An active listener keeps itself
// alive until close().
Napi::Value Listener::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0)
    throw SystemError(env, EBADF, "uv_poll_start", "listener is closed");
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
  int rc = uv_poll_start(poll_, UV_READABLE, OnPoll);
  if (rc < 0) throw SystemError(env, -rc, "uv_poll_start");
  if (!active_) {
    active_ = true;
    Ref();
  }
  return env.Undefined();
}

// pause(): stops accepting; connections wait in the kernel's backlog.
Napi::Value Listener::Pause(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr) uv_poll_stop(poll_);
  if (active_) {
    active_ = false;
    Unref();
  }
  return info.Env().Undefined();
}

Napi::Value Listener::Close(const Napi::CallbackInfo& info) {
  Pause(info);
  if (poll_ != nullptr) {
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* handle) {
      delete reinterpret_cast<uv_poll_t*>(handle);
    });
    poll_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  return info.Env().Undefined();
}

Napi::Value Listener::Address(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0)
    throw SystemError(env, EBADF, "getsockname", "listener is closed");
  sockaddr_storage addr{};
  socklen_t length = sizeof(addr);
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) < 0) {
    throw SystemError(env, errno, "getsockname");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("address", FormatAddress(addr));
  result.Set("port", AddressPort(addr));
  return result;
}

void Listener::OnPoll(uv_poll_t* handle, int status, int) {
  auto* self = static_cast<Listener*>(handle->data);
  if (self == nullptr) return;
  Napi::HandleScope scope(self->Env());
  if (status < 0) {
    self->ReportError(-status, "uv_poll", false);
    return;
  }
  self->AcceptBatch();
}

void Listener::ReportError(int err, const char* syscall, bool paused) {
  Napi::Env env = Env();
  Napi::Error error = SystemError(env, err, syscall);
  error.Set("paused", Napi::Boolean::New(env, paused));
  CallFromLoop(env, onError_.Value(), Value(), {error.Value()});
}

// Accepts and drops one pending connection when the process is out of
// descriptors, by closing the reserved descriptor for a moment. Without this
// a level-triggered listener fires again at once and spins a core. Returns
// false when no reserve is available; the caller then pauses the listener.
bool Listener::DropOnDescriptorExhaustion(int err) {
  AddonData* data = GetAddonData(Env());
  if (data->reserveFd < 0) {
    data->reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (data->reserveFd < 0) return false;
  }
  close(data->reserveFd);
  int dropped = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (dropped >= 0) close(dropped);
  data->reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  (void)err;
  return true;
}

void Listener::AcceptBatch() {
  Napi::Env env = Env();
  // One scope for the batch: the promise jobs that each connection starts
  // run once, after the last callback, instead of after every connection.
  LoopCallbackScope callbackScope(env);
  for (int i = 0; i < acceptLimit_ && fd_ >= 0; i++) {
    sockaddr_storage client{};
    socklen_t clientLength = sizeof(client);
    int fd = accept4(fd_, reinterpret_cast<sockaddr*>(&client), &clientLength,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      switch (err) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
          return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case EPERM:
          continue;
        case EMFILE:
        case ENFILE:
          if (DropOnDescriptorExhaustion(err)) {
            ReportError(err, "accept", false);
          } else {
            uv_poll_stop(poll_);
            ReportError(err, "accept", true);
          }
          return;
        default:
          // ENOBUFS, ENOMEM and the like: pause, and let JavaScript resume
          // after a delay rather than retry in a tight loop.
          uv_poll_stop(poll_);
          ReportError(err, "accept", true);
          return;
      }
    }

    sockaddr_storage server{};
    socklen_t serverLength = sizeof(server);
    getsockname(fd, reinterpret_cast<sockaddr*>(&server), &serverLength);
    Napi::HandleScope scope(env);
    CallInScope(env, onConnection_.Value(), Value(),
                {Napi::Number::New(env, fd),
                 Napi::String::New(env, FormatAddress(client)),
                 Napi::Number::New(env, AddressPort(client)),
                 Napi::String::New(env, FormatAddress(server)),
                 Napi::Number::New(env, AddressPort(server))});
    // The callback may have paused or closed this listener.
    if (!active_) return;
  }
}

}  // namespace postwarden
