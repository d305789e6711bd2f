// The CUDA allocator's book of blocks (runtime.cu): the live ones, and the freed ones kept to hand out again, each
// with the fence of the side work (SideWork, cuda/common.cuh) that last read or wrote it. Host-only C++ with no CUDA
// call, so that the fake device (test/cuda_host/fake_device.cpp) keeps its blocks in the same book, with fences that
// pass when its side work has run, and its checks test these rules:
// - a freed block is handed out again only for the same rounded size, the latest freed first, and only once its
//   fence has passed (no fence: at once);
// - a block allocated while side work is open carries that work's fence (the caller passes it), and mark() gives the
//   live block holding an address the fence of the side work that reads or writes it;
// - freeing a block moves it, fence and all, to the freed ones.
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
  // of a fence that is not null), the latest freed first: taken out of the freed ones; null if there is none.
  template <typename Passed>
  void* take(size_t size, Passed&& passed) {
    auto it = freed_.find(size);
    if (it == freed_.end()) return nullptr;
    std::vector<std::pair<void*, Fence>>& blocks = it->second;
    for (size_t i = blocks.size(); i-- > 0;) {
      if (blocks[i].second && !passed(blocks[i].second)) continue;
      void* p = blocks[i].first;
      blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(i));
      return p;
    }
    return nullptr;
  }

  // p (size bytes) is in use, marked by `fence` (null: none).
  void add_live(void* p, size_t size, Fence fence) { live_[reinterpret_cast<uintptr_t>(p)] = Live{size, std::move(fence)}; }

  // p goes to the freed ones with its fence; its size, or 0 where p is not a live block (then nothing changes).
  size_t free(void* p) {
    auto it = live_.find(reinterpret_cast<uintptr_t>(p));
    if (it == live_.end()) return 0;
    const size_t size = it->second.size;
    freed_[size].emplace_back(p, std::move(it->second.fence));
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
      std::vector<std::pair<void*, Fence>> kept;
      for (auto& b : blocks)
        if (!drop(b.first, size, b.second)) kept.push_back(std::move(b));
      blocks.swap(kept);
    }
  }

 private:
  struct Live {
    size_t size;
    Fence fence;
  };
  std::map<size_t, std::vector<std::pair<void*, Fence>>> freed_;  // rounded size -> blocks, the latest freed last
  std::map<uintptr_t, Live> live_;  // ordered: mark() finds a block by any address in it
};

}  // namespace cuda
}  // namespace instill
