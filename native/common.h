// Shared helpers for the postwarden addon: system errors as JavaScript
// errors, socket address formatting, and calls into JavaScript from libuv
// callbacks. The addon never logs; every failure reaches JavaScript as an
// Error with `code`, `errno` (negative, as in Node) and `syscall`.
#pragma once

#include <napi.h>
#include <sys/socket.h>
#include <uv.h>

#include <string>

namespace postwarden {

// Builds an Error for a failed system call. `err` is a positive errno value.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall,
                        const std::string& detail = "");

// Formats an address as text. An IPv4-mapped IPv6 address is formatted as
// plain IPv4, because smtpd and access lists expect the IPv4 form.
std::string FormatAddress(const sockaddr_storage& addr);
int AddressPort(const sockaddr_storage& addr);

// Per-environment state shared by the addon's classes.
struct AddonData {
  Napi::ObjectReference asyncResource;
  napi_async_context asyncContext = nullptr;
  uv_loop_t* loop = nullptr;
  // A descriptor kept open to be closed when accept() fails with EMFILE, so
  // that the pending connection can be accepted and dropped.
  int reserveFd = -1;
};

AddonData* GetAddonData(Napi::Env env);

// Connects a non-blocking stream socket to a UNIX-domain path and returns
// it. Throws a system error whose syscall is "socket" or "connect".
int ConnectUnixPath(Napi::Env env, const std::string& path);

// Sends one 0x00 byte carrying `fd` as SCM_RIGHTS on `channel`, the first
// message of Postfix's pass protocol. Returns 0, or the errno value of a
// failed sendmsg() (EAGAIN or ETOOMANYREFS mean: retry when writable).
int SendDescriptor(int channel, int fd);

// Calls `callback` from a libuv callback: opens a handle scope, runs it as a
// top-level call with an async context (so microtasks run afterwards), and
// turns a JavaScript exception into an uncaught exception.
void CallFromLoop(Napi::Env env, const Napi::Function& callback,
                  const Napi::Object& receiver,
                  const std::initializer_list<napi_value>& args);

// Opens a callback scope for several calls into JavaScript from one libuv
// callback, so that microtasks and process.nextTick callbacks run once when
// the scope closes, not after every call. Use CallInScope() inside it.
class LoopCallbackScope {
 public:
  explicit LoopCallbackScope(Napi::Env env);
  ~LoopCallbackScope();
  LoopCallbackScope(const LoopCallbackScope&) = delete;
  LoopCallbackScope& operator=(const LoopCallbackScope&) = delete;

 private:
  napi_env env_;
  napi_callback_scope scope_ = nullptr;
};

// Calls `callback` inside a LoopCallbackScope and turns a JavaScript
// exception into an uncaught exception, as CallFromLoop() does.
void CallInScope(Napi::Env env, const Napi::Function& callback,
                 const Napi::Object& receiver,
                 const std::initializer_list<napi_value>& args);

}  // namespace postwarden
