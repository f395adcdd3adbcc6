// Module entry: shared helpers and the free functions (connecting to a
// UNIX-domain socket, socket pairs for tests). The classes live in
// sockets.cc, listener.cc and handoffs.cc.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"
#include "handoffs.h"
#include "listener.h"
#include "sockets.h"

namespace postwarden {

Napi::Error SystemError(Napi::Env env, int err, const char* syscall,
                        const std::string& detail) {
  const char* code = uv_err_name(-err);
  std::string message =
      std::string(syscall) + " " + code + ": " + strerror(err);
  if (!detail.empty()) message += " (" + detail + ")";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

std::string FormatAddress(const sockaddr_storage& addr) {
  char text[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
  } else if (addr.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    }
  }
  return text;
}

int AddressPort(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  }
  if (addr.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  }
  return 0;
}

AddonData* GetAddonData(Napi::Env env) {
  return env.GetInstanceData<AddonData>();
}

void CallFromLoop(Napi::Env env, const Napi::Function& callback,
                  const Napi::Object& receiver,
                  const std::initializer_list<napi_value>& args) {
  AddonData* data = GetAddonData(env);
  try {
    callback.MakeCallback(receiver, args, data->asyncContext);
  } catch (const Napi::Error& error) {
    napi_fatal_exception(env, error.Value());
  }
}

LoopCallbackScope::LoopCallbackScope(Napi::Env env) : env_(env) {
  AddonData* data = GetAddonData(env);
  napi_open_callback_scope(env, data->asyncResource.Value(), data->asyncContext,
                           &scope_);
}

LoopCallbackScope::~LoopCallbackScope() {
  if (scope_ != nullptr) napi_close_callback_scope(env_, scope_);
}

void CallInScope(Napi::Env env, const Napi::Function& callback,
                 const Napi::Object& receiver,
                 const std::initializer_list<napi_value>& args) {
  try {
    callback.Call(receiver, args);
  } catch (const Napi::Error& error) {
    napi_fatal_exception(env, error.Value());
  }
}

int ConnectUnixPath(Napi::Env env, const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    throw SystemError(env, ENAMETOOLONG, "connect", path);
  }
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw SystemError(env, errno, "socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    int err = errno;
    close(fd);
    throw SystemError(env, err, "connect", path);
  }
  return fd;
}

int SendDescriptor(int channel, int fd) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof(control));
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(header), &fd, sizeof(int));
  ssize_t n;
  do {
    n = sendmsg(channel, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? errno : 0;
}

namespace {

// connectUnix(path): connects a non-blocking stream socket to a UNIX-domain
// path. Linux completes or fails such a connect at once; a full listen
// backlog fails with EAGAIN, which the caller may retry.
Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  return Napi::Number::New(env, ConnectUnixPath(env, path));
}

// socketPair(): two connected UNIX-domain stream sockets, for tests and
// fakes of smtpd's side of the hand-off.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) <
      0) {
    throw SystemError(env, errno, "socketpair");
  }
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, Napi::Number::New(env, fds[0]));
  pair.Set(1u, Napi::Number::New(env, fds[1]));
  return pair;
}

void Cleanup(Napi::Env, AddonData* data) {
  if (data->reserveFd >= 0) close(data->reserveFd);
  delete data;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData, Cleanup>(data);

  napi_get_uv_event_loop(env, &data->loop);
  Napi::Object resource = Napi::Object::New(env);
  data->asyncResource = Napi::Persistent(resource);
  napi_async_init(env, resource, Napi::String::New(env, "postwarden:socket"),
                  &data->asyncContext);
  data->reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC);

  exports.Set("Sockets", Sockets::Init(env));
  exports.Set("Listener", Listener::Init(env));
  exports.Set("Handoffs", Handoffs::Init(env));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair));
  return exports;
}

}  // namespace
}  // namespace postwarden

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return postwarden::Init(env, exports);
}

NODE_API_MODULE(postwarden, InitModule)
