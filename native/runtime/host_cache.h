// A cache of large host (CPU) blocks, so the buffers a training step or a kernel
// call allocates and frees again are reused instead of returned to the kernel.
//
// Why: a freshly mapped block is zero-filled page by page on first touch. On the
// virtual machines this project runs on that costs ~0.5 ms per MiB (4.6 ms for one
// 9 MiB output measured on 2026-11-26, 0.2 ms for the same block warm), which made
// a 576→576 LoRA forward+backward at 4096 tokens 2x slower than its arithmetic;
// glibc hands blocks this large back to the kernel on free (mmap threshold).
//
// Blocks of at least kMinBytes are rounded up to a size class (a multiple of one
// eighth of the largest power of two not above the size: at most 12.5% more) and,
// when freed, kept on that class's list (most recently freed first) while the
// cache holds less than its limit; otherwise they are freed. Smaller blocks go
// straight to aligned_alloc/free. Limit: min(physical memory / 8, 2 GiB), or
// INSTILL_HOST_CACHE_MB (0 turns the cache off), read once. A failed allocation
// empties the cache and tries again. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace instill {

// 64-byte aligned; nullptr when the system is out of memory (after emptying the cache).
void* host_alloc(size_t bytes);
// p from host_alloc(bytes) with the same bytes.
void host_free(void* p, size_t bytes);
// Frees every cached block; returns the bytes released.
uint64_t host_cache_release();
// Bytes held in the cache now, and its limit.
uint64_t host_cache_bytes();
uint64_t host_cache_limit();

}  // namespace instill
