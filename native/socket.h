// A non-blocking socket descriptor owned by the addon: an accepted SMTP
// client or a channel to smtpd. It offers one-shot readiness watches on
// Node's event loop, peeking without consuming, short writes, descriptor
// passing and closing. It never reads a client's bytes unless asked to
// discard them, so smtpd still receives what the client sent early.
#pragma once

#include <napi.h>
#include <uv.h>

#include "common.h"

namespace postwarden {

class Socket : public Napi::ObjectWrap<Socket> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, int fd);

  explicit Socket(const Napi::CallbackInfo& info);
  ~Socket() override;

  int fd() const { return fd_; }

 private:
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value Watch(const Napi::CallbackInfo& info);
  Napi::Value Unwatch(const Napi::CallbackInfo& info);
  Napi::Value Peek(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Discard(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value SendFd(const Napi::CallbackInfo& info);
  Napi::Value ReceiveFd(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Shutdown(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);

  void CheckOpen(Napi::Env env, const char* syscall) const;
  void StopWatching();
  void ClosePollHandle();

  int fd_ = -1;
  uv_poll_t* poll_ = nullptr;
  bool watching_ = false;
  Napi::FunctionReference callback_;
};

}  // namespace postwarden
