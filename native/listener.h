// A TCP listening socket watched on Node's event loop. Each readiness event
// accepts up to a fixed number of connections (non-blocking, close-on-exec)
// and reports each one with its client and server address and port.
#pragma once

#include <napi.h>
#include <uv.h>

namespace postwarden {

class Listener : public Napi::ObjectWrap<Listener> {
 public:
  static Napi::Function Init(Napi::Env env);

  explicit Listener(const Napi::CallbackInfo& info);
  ~Listener() override;

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Address(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  void AcceptBatch();
  bool DropOnDescriptorExhaustion(int err);
  void ReportError(int err, const char* syscall, bool paused);

  int fd_ = -1;
  int acceptLimit_ = 32;
  uv_poll_t* poll_ = nullptr;
  bool active_ = false;
  Napi::FunctionReference onConnection_;
  Napi::FunctionReference onError_;
};

}  // namespace postwarden
