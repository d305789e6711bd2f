// The CUDA allocator's book of blocks (runtime.cu): the live ones, and the freed ones kept to hand out again, each
// with the fence of the side work (SideWork, cuda/common.cuh) that last read or wrote it. Host-only C++ with no CUDA
// call, so that the fake device (test/cuda_host/fake_device.cpp) keeps its blocks in the same book, with fences that
// pass when its side work has run, and its checks test these rules:
// - a freed block is handed out again only for the same rounded size, the latest freed first, and only once its
//   fence has passed (no fence: at once);
// - a block allocated while side work is open carries that work's fence (the caller passes it), and mark() gives the
//   live block holding an address the fence of the side work that reads or writes it;
// - freeing a block moves it, fence and all, to the freed ones;
// - a block for side work (take()'s side_fork: the number of its fork, the point on the main stream where it began)
//   must also have been freed before that fork. A block freed after it may still be read or written by main-stream
//   work queued after the fork (by another thread: the JS thread beside a pass on a worker), which the side stream
//   does not wait for; the main stream's own allocations need no such rule (one stream runs in order). The caller
//   numbers the forks from 1 and passes free() the number of forks so far. (Blocks the side work itself frees carry
//   its fence, which has not passed while it is open: they wait for a later fork anyway.)
// Fence is a shared_ptr-like handle (null: none). The caller holds the lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <utility>
#include <vector>

namespace instill {
namespace cuda {

template <typename Fence>
class BlockCache {
 public:
  // A freed block of `size` bytes (rounded, as given to add_live) whose fence has passed (passed(fence) is asked only
  // of a fence that is not null), the latest freed first: taken out of the freed ones; null if there is none. For the
  // side work forked at side_fork (0: the main stream's), only a block freed before that fork.
  template <typename Passed>
  void* take(size_t size, Passed&& passed, uint64_t side_fork = 0) {
    auto it = freed_.find(size);
    if (it == freed_.end()) return nullptr;
    std::vector<Freed>& blocks = it->second;
    for (size_t i = blocks.size(); i-- > 0;) {
      const Freed& b = blocks[i];
      if (side_fork != 0 && b.forks >= side_fork) continue;
      if (b.fence && !passed(b.fence)) continue;
      void* p = b.p;
      blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(i));
      return p;
    }
    return nullptr;
  }

  // p (size bytes) is in use, marked by `fence` (null: none).
  void add_live(void* p, size_t size, Fence fence) { live_[reinterpret_cast<uintptr_t>(p)] = Live{size, std::move(fence)}; }

  // p goes to the freed ones with its fence and the number of forks so far; its size, or 0 where p is not a live
  // block (then nothing changes).
  size_t free(void* p, uint64_t forks = 0) {
    auto it = live_.find(reinterpret_cast<uintptr_t>(p));
    if (it == live_.end()) return 0;
    const size_t size = it->second.size;
    freed_[size].push_back(Freed{p, std::move(it->second.fence), forks});
    live_.erase(it);
    return size;
  }

  // The fence of live block p (null where p is not one: nothing to wait for).
  const Fence* fence_of(const void* p) const {
    auto it = live_.find(reinterpret_cast<uintptr_t>(p));
    return it == live_.end() ? nullptr : &it->second.fence;
  }

  // The live block holding address `at` gets `fence` (the later side work's: it passes after any earlier one's);
  // false where no live block holds it.
  bool mark(const void* at, Fence fence) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(at);
    auto it = live_.upper_bound(a);
    if (it == live_.begin()) return false;
    --it;
    if (a >= it->first + it->second.size) return false;
    it->second.fence = std::move(fence);
    return true;
  }

  // Each freed block for which drop(p, size, fence) says true leaves the book (the caller gives it back).
  template <typename Drop>
  void release(Drop&& drop) {
    for (auto& [size, blocks] : freed_) {
      std::vector<Freed> kept;
      for (auto& b : blocks)
        if (!drop(b.p, size, b.fence)) kept.push_back(std::move(b));
      blocks.swap(kept);
    }
  }

 private:
  struct Live {
    size_t size;
    Fence fence;
  };
  struct Freed {
    void* p;
    Fence fence;
    uint64_t forks;  // forks so far when it was freed
  };
  std::map<size_t, std::vector<Freed>> freed_;  // rounded size -> blocks, the latest freed last
  std::map<uintptr_t, Live> live_;  // ordered: mark() finds a block by any address in it
};

}  // namespace cuda
}  // namespace instill
