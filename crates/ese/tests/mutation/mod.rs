//! Mutations of valid on-disk images, and a guard that runs a parser on one.
//!
//! Shared by the parser mutation tests of `ese`, `events` and `backup` (the other crates
//! include this file by path) so that every parser is held to the same rules: on any input it
//! returns, without panicking, within a deadline, and without asking the allocator for more
//! than a bound fixed by the test (a length field of 4 GiB must be refused, not allocated).
//!
//! Flipped bytes are mostly caught by checksums; the tests therefore also *reseal* mutated
//! images (recompute the checksum over the damage) so that the decoders behind the checksums
//! see hostile lengths and offsets too.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

/// How long one parse may take before the test calls it a hang. Generous: the machines that
/// run the tests are slow and busy, and a real hang never returns.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// One change to a valid image. Positions are taken modulo the image length.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR one byte with a non-zero mask.
    Flip { at: usize, mask: u8 },
    /// Overwrite four bytes with a value typical of a bad length or offset field.
    Plant { at: usize, value: u32 },
    /// Cut the image at a position.
    Truncate { at: usize },
    /// Append bytes.
    Extend { bytes: Vec<u8> },
    /// Copy a run of the donor image (another valid image, or the same) over a position.
    Splice { from: usize, to: usize, len: usize },
    /// Remove a run of bytes (shifts everything after it).
    Delete { at: usize, len: usize },
    /// Insert bytes (shifts everything after it).
    Insert { at: usize, bytes: Vec<u8> },
}

/// Values that break length and offset fields: zero, one, all ones, just over a power of
/// two, a 4 GiB-ish length.
fn hostile_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(u32::MAX - 16),
        Just(0x8000_0000),
        Just(0x0001_0001),
        Just(4096),
        Just(4097),
        any::<u32>(),
    ]
}

/// Any one mutation.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        3 => (any::<usize>(), hostile_u32()).prop_map(|(at, value)| Mutation::Plant { at, value }),
        2 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Extend { bytes }),
        2 => (any::<usize>(), any::<usize>(), 1usize..512)
            .prop_map(|(from, to, len)| Mutation::Splice { from, to, len }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

/// One to three mutations.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..4)
}

/// Mutations that keep the length (for images whose checksums are recomputed in place).
pub fn in_place() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
            3 => (any::<usize>(), hostile_u32())
                .prop_map(|(at, value)| Mutation::Plant { at, value }),
            1 => (any::<usize>(), any::<usize>(), 1usize..64)
                .prop_map(|(from, to, len)| Mutation::Splice { from, to, len }),
        ],
        1..4,
    )
}

/// Applies `m` to `data`; `donor` feeds splices.
pub fn apply(data: &mut Vec<u8>, m: &Mutation, donor: &[u8]) {
    let n = data.len();
    match m {
        Mutation::Flip { at, mask } if n > 0 => data[at % n] ^= mask,
        Mutation::Plant { at, value } if n > 0 => {
            let at = at % n;
            let end = (at + 4).min(n);
            data[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
        }
        Mutation::Truncate { at } => data.truncate(if n == 0 { 0 } else { at % n }),
        Mutation::Extend { bytes } => data.extend_from_slice(bytes),
        Mutation::Splice { from, to, len } if n > 0 && !donor.is_empty() => {
            let from = from % donor.len();
            let to = to % n;
            let len = (*len).min(donor.len() - from).min(n - to);
            data[to..to + len].copy_from_slice(&donor[from..from + len]);
        }
        Mutation::Delete { at, len } if n > 0 => {
            let at = at % n;
            let len = (*len).min(n - at);
            data.drain(at..at + len);
        }
        Mutation::Insert { at, bytes } => {
            let at = if n == 0 { 0 } else { at % (n + 1) };
            data.splice(at..at, bytes.iter().copied());
        }
        _ => {}
    }
}

/// `data` with every mutation of `ms` applied, in order, restricted to `range` when given
/// (positions then fall inside the range; truncations and insertions act on the whole image).
pub fn mutated(data: &[u8], ms: &[Mutation], donor: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for m in ms {
        apply(&mut out, m, donor);
    }
    out
}

/// Applies length-keeping mutations inside `data[range]` only.
pub fn mutate_range(data: &mut [u8], range: std::ops::Range<usize>, ms: &[Mutation]) {
    let mut part = data[range.clone()].to_vec();
    let donor = data.to_vec();
    for m in ms {
        apply(&mut part, m, &donor);
    }
    part.truncate(range.len());
    data[range.start..range.start + part.len()].copy_from_slice(&part);
}

/// Counts the largest single allocation request of threads that asked for it, so that a
/// parser that would allocate a garbage length (which Linux grants lazily and the test would
/// never notice) is caught.
pub struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; the bookkeeping touches only const-initialised thread locals without
// destructors, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `parse` on a thread of its own and returns its result, failing the test if it panics,
/// does not return within [`DEADLINE`], or asks for a single allocation over `max_alloc`
/// bytes. `what` names the parser and input for the failure message.
pub fn guarded<T: Send + 'static>(
    what: &str,
    max_alloc: usize,
    parse: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        ARMED.with(|a| a.set(true));
        LARGEST.with(|l| l.set(0));
        let out = parse();
        ARMED.with(|a| a.set(false));
        let largest = LARGEST.with(Cell::get);
        let _ = tx.send((out, largest));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok((out, largest)) => {
            let _ = worker.join();
            assert!(
                largest <= max_alloc,
                "{what}: asked for {largest} bytes at once (bound {max_alloc})"
            );
            out
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let why = match worker.join() {
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Ok(()) => String::new(),
            };
            panic!("{what}: the parser panicked: {why}")
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: the parser did not return within {DEADLINE:?} (a hang?)")
        }
    }
}

/// Proptest cases: `default` in `cargo test`, `PROPTEST_CASES` for a longer campaign.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
