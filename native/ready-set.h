// An epoll set that the addon owns, watched by a single libuv poll handle,
// with results for JavaScript gathered in a Float64Array and delivered in
// batches through one call. The hand-offs and the socket watches each keep
// one, so that a waiting descriptor costs an epoll entry and no libuv
// handle of its own.
#pragma once

#include <napi.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <string>

#include "common.h"

namespace postwarden {

template <typename Owner>
class ReadySet {
 public:
  // Takes (events, onEvents) from info[0] and info[1], where `events` has
  // room for results of `slots` numbers each, and opens the epoll set.
  // `onPoll` runs when the set has ready descriptors. Throws on failure.
  ReadySet(const Napi::CallbackInfo& info, const char* name, size_t slots,
           Owner* owner, uv_poll_cb onPoll)
      : owner_(owner), slots_(slots) {
    Napi::Env env = info.Env();
    std::string prefix = std::string(name) + ": ";
    if (!info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
      throw Napi::TypeError::New(env, prefix + "events must be a Float64Array");
    }
    if (!info[1].IsFunction()) {
      throw Napi::TypeError::New(env, prefix + "onEvents must be a function");
    }
    Napi::Float64Array events = info[0].As<Napi::Float64Array>();
    capacity_ = events.ElementLength() / slots_;
    if (capacity_ == 0) {
      throw Napi::RangeError::New(
          env, prefix + "events must have room for one result (" +
                   std::to_string(slots_) + " numbers)");
    }
    data_ = events.Data();
    events_ = Napi::Persistent(events);
    onEvents_ = Napi::Persistent(info[1].As<Napi::Function>());

    epollFd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epollFd_ < 0) throw SystemError(env, errno, "epoll_create1");
    poll_ = new uv_poll_t;
    int rc = uv_poll_init(GetAddonData(env)->loop, poll_, epollFd_);
    if (rc < 0) {
      delete poll_;
      poll_ = nullptr;
      close(epollFd_);
      epollFd_ = -1;
      throw SystemError(env, -rc, "uv_poll_init");
    }
    poll_->data = owner;
    uv_poll_start(poll_, UV_READABLE, onPoll);
    uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
  }

  ~ReadySet() { Close(); }
  ReadySet(const ReadySet&) = delete;
  ReadySet& operator=(const ReadySet&) = delete;

  int fd() const { return epollFd_; }

  // Closes the poll handle and the epoll set; watched descriptors stay
  // open, as they belong to the owner.
  void Close() {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* handle) {
        delete reinterpret_cast<uv_poll_t*>(handle);
      });
      poll_ = nullptr;
    }
    if (epollFd_ >= 0) {
      close(epollFd_);
      epollFd_ = -1;
    }
  }

  // Returns room for one result, delivering the results gathered first
  // when the array is full.
  double* NextSlot() {
    if (count_ == capacity_) Flush();
    return data_ + (count_++) * slots_;
  }

  // Calls onEvents(count) for the results gathered. The callback may
  // change the owner's state, so no iterator may be held across a flush.
  void Flush() {
    if (count_ == 0) return;
    Napi::Env env = owner_->Env();
    Napi::HandleScope scope(env);
    double count = static_cast<double>(count_);
    count_ = 0;
    CallFromLoop(env, onEvents_.Value(), owner_->Value(),
                 {Napi::Number::New(env, count)});
  }

  // Keeps Node's event loop alive while `needed`, for pending results.
  void Reference(bool needed) {
    if (needed == referenced_ || poll_ == nullptr) return;
    referenced_ = needed;
    if (needed) {
      uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    } else {
      uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    }
  }

  // Takes the ready descriptors in batches and passes each epoll_event to
  // `handle`, delivering the results after every batch, because onEvents
  // may close what the next batch reports. A bounded number of rounds
  // keeps a flood from holding the event loop.
  template <typename Handle>
  void Drain(Handle&& handle) {
    constexpr int kReadyBatch = 64;
    constexpr int kMaxWaitRounds = 16;
    epoll_event ready[kReadyBatch];
    for (int round = 0; round < kMaxWaitRounds && epollFd_ >= 0; round++) {
      int n = epoll_wait(epollFd_, ready, kReadyBatch, 0);
      if (n <= 0) break;
      for (int i = 0; i < n; i++) handle(ready[i]);
      Flush();
      if (n < kReadyBatch) break;
    }
  }

 private:
  Owner* owner_;
  size_t slots_;
  int epollFd_ = -1;
  uv_poll_t* poll_ = nullptr;
  bool referenced_ = false;
  Napi::Reference<Napi::Float64Array> events_;
  double* data_ = nullptr;
  size_t capacity_ = 0;
  size_t count_ = 0;
  Napi::FunctionReference onEvents_;
};

}  // namespace postwarden
