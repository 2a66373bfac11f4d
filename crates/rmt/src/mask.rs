//! RMT's attention mask (Bulatov et al., 2022, §3; `dec_attn_mask` of
//! booydar/LM-RMT), over keys `[cache (c) ; read (m) ; segment (s) ; write (m)]`
//! for queries `[read ; segment ; write]`:
//!
//! ```text
//!                 keys:  cache   read    segment   write
//! read memory    │  R?  │ all   │  —       │  —     │
//! segment token  │  ✓   │ all   │ causal   │  —     │
//! write memory   │  R?  │ all   │ all      │ all    │
//! ```
//!
//! `R?`: the cache is visible to memory tokens only with
//! `read_mem_from_cache`; segment tokens always see it. Without `mem_at_end`
//! there is no write block.

use burn::prelude::*;

/// Whether query `i` must not attend to key `j` (`true` = masked): the
/// rules above, one cell at a time.
pub fn rmt_masked(
    i: usize,
    j: usize,
    m: usize,
    s: usize,
    cache: usize,
    mem_at_end: bool,
    read_mem_from_cache: bool,
) -> bool {
    let write = if mem_at_end { m } else { 0 };
    debug_assert!(i < m + s + write && j < cache + m + s + write);
    // Query and key blocks: 0 read, 1 segment, 2 write; keys also -1 cache.
    let query_block = if i < m {
        0
    } else if i < m + s {
        1
    } else {
        2
    };
    if j < cache {
        return query_block != 1 && !read_mem_from_cache;
    }
    let k = j - cache;
    let key_block = if k < m {
        0
    } else if k < m + s {
        1
    } else {
        2
    };
    match (query_block, key_block) {
        (_, 0) => false, // everyone reads the read block
        (0, _) => true,  // read memory reads nothing else
        (1, 1) => k > i, // causal within the segment
        (1, 2) => true,  // the segment never sees the write block
        (2, _) => false, // write memory sees everything
        _ => unreachable!(),
    }
}

/// The mask `[1, 1, q, cache + q]` for a segment of `s` tokens with `m`
/// memory tokens after `cache` cached positions.
pub fn rmt_mask<B: Backend>(
    m: usize,
    s: usize,
    cache: usize,
    mem_at_end: bool,
    read_mem_from_cache: bool,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let q = m + s + if mem_at_end { m } else { 0 };
    let k = cache + q;
    let cells: Vec<bool> = (0..q * k)
        .map(|n| rmt_masked(n / k, n % k, m, s, cache, mem_at_end, read_mem_from_cache))
        .collect();
    Tensor::<B, 2, Bool>::from_data(TensorData::new(cells, [q, k]), device).reshape([1, 1, q, k])
}
