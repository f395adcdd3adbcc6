// Non-blocking socket descriptors owned by JavaScript: accepted SMTP
// clients and channels to smtpd. The addon keeps no object per socket.
// Every operation takes the descriptor number: peeking without consuming,
// short writes, descriptor passing, closing. Readiness watches are
// one-shot and share one epoll set behind a single libuv poll handle.
// Their results reach JavaScript in batches, through a Float64Array given
// at construction and one call with their count. A client's bytes are never
// read unless asked, so smtpd still receives what the client sent early.
#pragma once

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <vector>

#include "ready-set.h"

namespace postwarden {

class Sockets : public Napi::ObjectWrap<Sockets> {
 public:
  static Napi::Function Init(Napi::Env env);

  explicit Sockets(const Napi::CallbackInfo& info);
  ~Sockets() override;

 private:
  // The epoll set's state for one descriptor number.
  struct Watch {
    // Bumped each time the descriptor enters the set, so that an event of
    // an earlier socket with the same number is recognised and dropped.
    uint32_t generation = 0;
    bool registered = false;
    bool armed = false;
    // The readiness requested: readable (1), writable (2) or both.
    uint8_t requested = 0;
  };

  Napi::Value WatchFd(const Napi::CallbackInfo& info);
  Napi::Value Unwatch(const Napi::CallbackInfo& info);
  Napi::Value Peek(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Discard(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value SendFd(const Napi::CallbackInfo& info);
  Napi::Value ReceiveFd(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value CloseFd(const Napi::CallbackInfo& info);
  Napi::Value Shutdown(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);

  int Descriptor(const Napi::CallbackInfo& info, const char* syscall) const;
  Watch* Find(int fd);
  void Disarm(Watch& watch);
  void Forget(int fd);
  void HandleReady(const epoll_event& event);
  void Report(int fd, int status, int events);
  void CloseAll();

  ReadySet<Sockets> ready_;
  std::vector<Watch> watches_;
  size_t armed_ = 0;
};

}  // namespace postwarden
