#include "handoffs.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

namespace postwarden {

namespace {

// Result kinds, each reported as (id, kind, errno, descriptor sent).
constexpr int kSent = 1;
constexpr int kSendFailed = 2;
constexpr int kFinished = 3;
constexpr int kTimedOut = 4;
constexpr int kUnread = 5;
constexpr size_t kEventSlots = 4;

constexpr uint32_t kWaitEvents = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
constexpr uint32_t kSendEvents = EPOLLOUT | EPOLLONESHOT;

// Maximum reads of stray bytes per readiness event. smtpd never writes on
// the channel, so anything beyond this waits for the next event.
constexpr int kMaxStrayReads = 16;

uint64_t NowMs() { return uv_hrtime() / 1000000; }

}  // namespace

Napi::Function Handoffs::Init(Napi::Env env) {
  return DefineClass(env, "Handoffs",
                     {
                         InstanceMethod<&Handoffs::Pass>("pass"),
                         InstanceMethod<&Handoffs::Finish>("finish"),
                         InstanceMethod<&Handoffs::Close>("close"),
                     });
}

// new Handoffs(events, onEvents): `events` is a Float64Array that receives
// four numbers per result, and onEvents(count) is called after each batch.
Handoffs::Handoffs(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Handoffs>(info),
      ready_(info, "Handoffs", kEventSlots, this, OnPoll) {
  timer_ = new uv_timer_t;
  uv_timer_init(GetAddonData(info.Env())->loop, timer_);
  timer_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(timer_));
}

Handoffs::~Handoffs() { CloseAll(); }

// Closes every channel and the handles; pending hand-offs get no result.
void Handoffs::CloseAll() {
  for (auto& [id, entry] : entries_) close(entry.channel);
  entries_.clear();
  deadlines_.clear();
  ready_.Close();
  if (timer_ != nullptr) {
    uv_timer_stop(timer_);
    timer_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* handle) {
      delete reinterpret_cast<uv_timer_t*>(handle);
    });
    timer_ = nullptr;
  }
}

// pass(clientFd, path, attributes, sendTimeoutMs, closeTimeoutMs) connects
// to the pass socket at `path`, sends the descriptor and the attributes,
// and returns the hand-off's id: positive when everything is sent, negative
// when the rest is sent once the channel is writable. Throws a system error
// whose syscall is "socket" or "connect" when connecting failed (EAGAIN
// means a full backlog), and "sendmsg", "send" or "epoll_ctl" when sending
// failed. The client descriptor stays the caller's, who closes it after
// the result.
Napi::Value Handoffs::Pass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ready_.fd() < 0) throw SystemError(env, EBADF, "pass", "closed");
  int client = info[0].As<Napi::Number>().Int32Value();
  std::string path = info[1].As<Napi::String>().Utf8Value();
  Napi::Buffer<char> attributes = info[2].As<Napi::Buffer<char>>();
  int64_t sendTimeoutMs = info[3].As<Napi::Number>().Int64Value();
  int64_t closeTimeoutMs = info[4].As<Napi::Number>().Int64Value();
  if (client < 0) throw SystemError(env, EBADF, "sendmsg", "client is closed");

  int channel = ConnectUnixPath(env, path);

  Entry entry;
  entry.channel = channel;
  entry.client = client;
  entry.closeTimeoutMs = closeTimeoutMs < 0 ? 0 : closeTimeoutMs;
  int err = ContinueSending(entry, attributes.Data(), attributes.Length());
  if (err != 0) {
    close(channel);
    throw SystemError(env, err, entry.descriptorSent ? "send" : "sendmsg");
  }
  uint64_t id = nextId_++;
  epoll_event event{};
  event.events = entry.waiting ? kWaitEvents : kSendEvents;
  event.data.u64 = id;
  if (epoll_ctl(ready_.fd(), EPOLL_CTL_ADD, channel, &event) < 0) {
    err = errno;
    close(channel);
    throw SystemError(env, err, "epoll_ctl");
  }
  uint64_t timeout = entry.waiting       ? entry.closeTimeoutMs
                     : sendTimeoutMs < 0 ? 0
                                         : sendTimeoutMs;
  bool waiting = entry.waiting;
  auto [position, inserted] = entries_.emplace(id, std::move(entry));
  (void)inserted;
  SetDeadline(id, position->second, NowMs() + timeout);
  UpdateRef();
  double result = static_cast<double>(id);
  return Napi::Number::New(env, waiting ? result : -result);
}

// Sends the descriptor byte, then as much of `data` as the channel takes,
// and keeps the rest in `pending`. Returns 0, or an errno value when
// sending failed. Sets `waiting` once everything is sent.
int Handoffs::ContinueSending(Entry& entry, const char* data, size_t size) {
  size_t offset = 0;
  if (!entry.descriptorSent) {
    int err = SendDescriptor(entry.channel, entry.client);
    if (err == 0) {
      entry.descriptorSent = true;
    } else if (err != EAGAIN && err != EWOULDBLOCK && err != ETOOMANYREFS) {
      return err;
    }
    // Otherwise too many descriptors are in flight: the caller waits until
    // the channel is writable and calls again.
  }
  while (entry.descriptorSent && offset < size) {
    ssize_t n = send(entry.channel, data + offset, size - offset,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return errno;
    }
    offset += static_cast<size_t>(n);
  }
  if (data == entry.pending.data()) {
    entry.pending.erase(0, offset);
  } else {
    entry.pending.assign(data + offset, size - offset);
  }
  if (entry.descriptorSent && entry.pending.empty()) {
    entry.pending.shrink_to_fit();
    entry.waiting = true;
  }
  return 0;
}

// finish(id): stops waiting for smtpd to close the channel and closes it.
// Returns false when the hand-off has a result already. Reports nothing.
Napi::Value Handoffs::Finish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t id = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  bool found = entries_.count(id) > 0;
  if (found) Remove(id);
  UpdateRef();
  return Napi::Boolean::New(env, found);
}

// close(): closes every channel; the object is unusable afterwards.
Napi::Value Handoffs::Close(const Napi::CallbackInfo& info) {
  CloseAll();
  return info.Env().Undefined();
}

void Handoffs::Remove(uint64_t id) {
  auto found = entries_.find(id);
  if (found == entries_.end()) return;
  deadlines_.erase({found->second.deadline, id});
  // Closing the channel also takes it out of the epoll set, unless a child
  // forked before exec() still holds the file. The watch is one-shot and
  // keyed by an id that is never reused, so such a late event is ignored.
  close(found->second.channel);
  entries_.erase(found);
}

void Handoffs::SetDeadline(uint64_t id, Entry& entry, uint64_t deadline) {
  if (entry.deadline != 0) deadlines_.erase({entry.deadline, id});
  entry.deadline = deadline;
  deadlines_.emplace(deadline, id);
  // The timer is moved earlier only; a later head is handled when it fires.
  if (timerDue_ == 0 || deadline < timerDue_) ArmTimer();
}

void Handoffs::ArmTimer() {
  if (timer_ == nullptr) return;
  if (deadlines_.empty()) {
    uv_timer_stop(timer_);
    timerDue_ = 0;
    return;
  }
  uint64_t due = deadlines_.begin()->first;
  uint64_t now = NowMs();
  timerDue_ = due;
  uv_timer_start(timer_, OnTimer, due > now ? due - now : 0, 0);
}

// Watches the channel again for `events`. On failure the entry is removed
// and false returned with errno set: the caller reports the result,
// because without a watch none would come.
bool Handoffs::Rearm(uint64_t id, Entry& entry, uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = id;
  if (epoll_ctl(ready_.fd(), EPOLL_CTL_MOD, entry.channel, &event) == 0) {
    return true;
  }
  int err = errno;
  Remove(id);
  errno = err;
  return false;
}

void Handoffs::Report(uint64_t id, int kind, int err, bool descriptorSent) {
  double* slot = ready_.NextSlot();
  slot[0] = static_cast<double>(id);
  slot[1] = kind;
  slot[2] = err;
  slot[3] = descriptorSent ? 1 : 0;
}

void Handoffs::UpdateRef() { ready_.Reference(!entries_.empty()); }

void Handoffs::HandleReady(uint64_t id) {
  auto found = entries_.find(id);
  // A result reported already, or a channel closed since the wait began.
  if (found == entries_.end()) return;
  Entry& entry = found->second;

  if (!entry.waiting) {
    int err =
        ContinueSending(entry, entry.pending.data(), entry.pending.size());
    bool hadDescriptor = entry.descriptorSent;
    if (err != 0) {
      Remove(id);
      Report(id, kSendFailed, err, hadDescriptor);
      return;
    }
    if (!entry.waiting) {
      if (!Rearm(id, entry, kSendEvents)) {
        Report(id, kSendFailed, errno, hadDescriptor);
      }
      return;
    }
    SetDeadline(id, entry, NowMs() + entry.closeTimeoutMs);
    // Rearmed before the report, because onEvents may finish this entry.
    bool watched = Rearm(id, entry, kWaitEvents);
    Report(id, kSent, 0);
    if (!watched) Report(id, kFinished, 0);
    return;
  }

  // smtpd writes nothing on the channel: end of stream is its "done", a
  // reset means it closed with our bytes unread, and stray bytes are read
  // and dropped.
  char buffer[512];
  for (int i = 0; i < kMaxStrayReads; i++) {
    ssize_t n = recv(entry.channel, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) {
      Remove(id);
      Report(id, kFinished, 0);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    int err = errno;
    Remove(id);
    Report(id, err == ECONNRESET ? kUnread : kFinished, err);
    return;
  }
  if (!Rearm(id, entry, kWaitEvents)) Report(id, kFinished, 0);
}

void Handoffs::OnPoll(uv_poll_t* handle, int status, int) {
  auto* self = static_cast<Handoffs*>(handle->data);
  if (self == nullptr || status < 0) return;
  self->ready_.Drain(
      [self](const epoll_event& event) { self->HandleReady(event.data.u64); });
  self->UpdateRef();
}

void Handoffs::OnTimer(uv_timer_t* handle) {
  auto* self = static_cast<Handoffs*>(handle->data);
  if (self == nullptr) return;
  self->timerDue_ = 0;
  self->ExpireDeadlines();
  self->ArmTimer();
  self->UpdateRef();
  self->ready_.Flush();
}

// Ends every hand-off whose deadline has passed: a send still in progress
// fails with ETIMEDOUT, and a wait for smtpd is reported as timed out.
void Handoffs::ExpireDeadlines() {
  uint64_t now = NowMs();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    uint64_t id = deadlines_.begin()->second;
    auto found = entries_.find(id);
    if (found == entries_.end()) {
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    bool waiting = found->second.waiting;
    bool hadDescriptor = found->second.descriptorSent;
    Remove(id);
    if (waiting) {
      Report(id, kTimedOut, 0);
    } else {
      Report(id, kSendFailed, ETIMEDOUT, hadDescriptor);
    }
  }
}

}  // namespace postwarden
