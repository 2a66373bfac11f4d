//! Seeding: one independent generator per `(task seed, split, batch index)`.

use memlab_core::Split;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// The generator of batch `index` of `split`. Xoshiro256++ is specified by
/// its algorithm, so generated data does not change with library versions.
pub fn batch_rng(seed: u64, split: Split, index: u64) -> Xoshiro256PlusPlus {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
        ^ split.seed_salt()
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    Xoshiro256PlusPlus::seed_from_u64(mixed)
}
