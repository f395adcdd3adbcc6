// Hand-offs to smtpd over Postfix's pass protocol, done in the addon. One
// call connects to the pass socket, sends the 0x00 byte carrying the
// client's descriptor and writes the attributes. Each channel then waits in
// an epoll set that the addon owns, watched by a single uv_poll handle, so a
// hand-off costs one epoll_ctl and no libuv handle of its own. One timer
// serves every deadline. Results reach JavaScript in batches: the addon
// writes them into a Float64Array given at construction and calls one
// function with their count.
#pragma once

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "ready-set.h"

namespace postwarden {

class Handoffs : public Napi::ObjectWrap<Handoffs> {
 public:
  static Napi::Function Init(Napi::Env env);

  explicit Handoffs(const Napi::CallbackInfo& info);
  ~Handoffs() override;

 private:
  struct Entry {
    int channel = -1;
    int client = -1;
    bool descriptorSent = false;
    bool waiting = false;
    // Attribute bytes not written yet, only when a write came up short.
    std::string pending;
    uint64_t deadline = 0;
    uint64_t closeTimeoutMs = 0;
  };

  Napi::Value Pass(const Napi::CallbackInfo& info);
  Napi::Value Finish(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnTimer(uv_timer_t* handle);

  void HandleReady(uint64_t id);
  int ContinueSending(Entry& entry, const char* data, size_t size);
  bool Rearm(uint64_t id, Entry& entry, uint32_t events);
  void Remove(uint64_t id);
  void SetDeadline(uint64_t id, Entry& entry, uint64_t deadline);
  void ExpireDeadlines();
  void ArmTimer();
  void Report(uint64_t id, int kind, int err, bool descriptorSent = false);
  void UpdateRef();
  void CloseAll();

  ReadySet<Handoffs> ready_;
  uv_timer_t* timer_ = nullptr;
  uint64_t nextId_ = 1;
  std::unordered_map<uint64_t, Entry> entries_;
  // (deadline in ms of uv_hrtime, id), earliest first.
  std::set<std::pair<uint64_t, uint64_t>> deadlines_;
  uint64_t timerDue_ = 0;
};

}  // namespace postwarden
