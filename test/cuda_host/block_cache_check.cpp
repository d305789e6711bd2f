// The CUDA allocator's book of blocks (native/cuda/block_cache.h) on its own: the rules runtime.cu relies on to hand
// a freed block out again safely while side work (SideWork) runs on a second stream, including the one the fake
// device cannot reach, because it runs one thread: a block another thread freed after a side work's fork is not
// handed to that side work. Host-only C++ (no CUDA); scripts/cuda-host-check.sh builds and runs it.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "cuda/block_cache.h"

namespace {

using instill::cuda::BlockCache;

struct Fence {
  bool passed = false;
};
using FenceRef = std::shared_ptr<Fence>;

int failures = 0, cases = 0;

void check(bool ok, const std::string& what) {
  ++cases;
  if (!ok) {
    ++failures;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

// Addresses only: the book never reads or writes the blocks.
void* block(uintptr_t at) { return reinterpret_cast<void*>(at); }

bool passed(const FenceRef& f) { return f->passed; }

}  // namespace

int main() {
  {  // the main stream: same rounded size only, the latest freed first, no rule about forks
    BlockCache<FenceRef> b;
    b.add_live(block(0x1000), 512, nullptr);
    b.add_live(block(0x2000), 512, nullptr);
    b.add_live(block(0x3000), 1024, nullptr);
    check(b.free(block(0x1000), 0) == 512, "free gives the block's size");
    check(b.free(block(0x2000), 3) == 512, "free gives the block's size (after 3 forks)");
    check(b.free(block(0x9000)) == 0, "freeing an address that is no live block gives 0");
    check(b.take(2048, passed) == nullptr, "no block of another size is handed out");
    check(b.take(512, passed) == block(0x2000), "the latest freed block first");
    check(b.take(512, passed) == block(0x1000), "then the one before");
    check(b.take(512, passed) == nullptr, "a block is handed out once");
  }
  {  // fences: a block side work reads or allocated waits for it, whoever asks
    BlockCache<FenceRef> b;
    auto f = std::make_shared<Fence>();
    b.add_live(block(0x1000), 512, f);        // allocated for side work
    b.add_live(block(0x2000), 512, nullptr);  // read by it (marked below)
    check(b.mark(block(0x2000 + 100), f), "mark finds the block holding an address inside it");
    check(!b.mark(block(0x2000 + 512), f), "mark finds no block for the address just past one");
    check(b.fence_of(block(0x2000)) && *b.fence_of(block(0x2000)) == f, "the marked block carries the fence");
    b.free(block(0x1000));
    b.free(block(0x2000));
    check(b.take(512, passed) == nullptr, "no block is handed out before its side work has run");
    check(b.take(512, passed, 5) == nullptr, "nor to other side work");
    f->passed = true;
    check(b.take(512, passed) == block(0x2000), "once it has run, the latest freed first");
    check(b.take(512, passed) == block(0x1000), "and the other");
  }
  {  // side work forked at fork 4 (the fourth fork): which freed blocks it may take
    BlockCache<FenceRef> b;
    for (uintptr_t a : {0x1000u, 0x2000u, 0x3000u}) b.add_live(block(a), 512, nullptr);
    b.free(block(0x1000), 3);  // freed before fork 4, on any thread: its main-stream work is behind the fork
    b.free(block(0x2000), 4);  // freed after fork 4 (main-stream work queued after the fork may still use it)
    b.free(block(0x3000), 5);  // freed after fork 5
    check(b.take(512, passed, 4) == block(0x1000), "side work takes a block freed before its fork");
    check(b.take(512, passed, 4) == nullptr, "but none freed after its fork");
    check(b.take(512, passed, 5) == block(0x2000), "side work forked after a free takes that block");
    check(b.take(512, passed, 6) == block(0x3000), "and the next one likewise");
  }
  {  // the race the rule is for, step by step: the JS thread frees x after the model's worker forked side work
    BlockCache<FenceRef> b;
    uint64_t forks = 0;
    b.add_live(block(0x1000), 4096, nullptr);  // x: the JS thread queues a main-stream kernel on it ...
    const uint64_t fork = ++forks;             // ... the worker forks side work (the side stream waits for the
                                               // main stream up to here, not for the kernel queued next) ...
    b.free(block(0x1000), forks);              // ... the JS thread queues another kernel on x and drops it
    check(b.take(4096, passed, fork) == nullptr, "the side work's allocation does not get x (it would race the kernel)");
    check(b.take(4096, passed) == block(0x1000), "the main stream's next allocation does (its kernels run in order)");
  }
  {  // release: every freed block the caller drops leaves the book, live blocks stay
    BlockCache<FenceRef> b;
    auto pending = std::make_shared<Fence>();
    b.add_live(block(0x1000), 512, nullptr);
    b.add_live(block(0x2000), 512, pending);
    b.add_live(block(0x3000), 512, nullptr);
    b.free(block(0x1000));
    b.free(block(0x2000));
    int dropped = 0;
    b.release([&dropped](void*, size_t, const FenceRef& f) {
      if (f && !f->passed) return false;
      ++dropped;
      return true;
    });
    check(dropped == 1, "release drops the freed block whose fence allows it, and only that");
    check(b.take(512, passed) == nullptr, "the block still waiting is not handed out");
    pending->passed = true;
    check(b.take(512, passed) == block(0x2000), "the kept block is handed out once its fence passed");
    check(b.fence_of(block(0x3000)) != nullptr, "a live block stays live");
  }
  std::printf("block_cache: %s: %d failure(s) in %d cases\n", failures ? "FAILED" : "passed", failures, cases);
  return failures ? 1 : 0;
}
