//! Allocations and time of the HPACK decoder on a typical gRPC request block:
//! `cargo run --release --example hpack_allocs` in `fuzz/`. Fails if decoding the block
//! allocates more than once (its one Huffman-coded value: indexed fields are `Bytes` clones,
//! plain literals share the block).
//!
//! The block is the second request of a gRPC connection: 2 static and 6 dynamic indexed fields
//! (entries the first request inserted), 4 plain literals not indexed (a timeout and the trace
//! context, new each time) and one Huffman-coded literal.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use bytes::Bytes;
use tracer_fuzz::protocol::http2::hpack::Decoder;

/// Counts allocations and reallocations.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Appends a literal field: `first` is its representation byte (with the name index, or 0
/// followed by `name`), then `value` as a plain string.
fn literal(out: &mut Vec<u8>, first: u8, name: Option<&[u8]>, value: &[u8]) {
    out.push(first);
    if let Some(n) = name {
        out.push(u8::try_from(n.len()).unwrap());
        out.extend_from_slice(n);
    }
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value);
}

fn main() {
    // The first request inserts :path, :authority, content-type, user-agent, te and
    // grpc-accept-encoding (literals with incremental indexing).
    let mut first = vec![0x83, 0x86];
    literal(&mut first, 0x44, None, b"/helloworld.Greeter/SayHello");
    literal(&mut first, 0x41, None, b"localhost:50051");
    literal(&mut first, 0x5f, None, b"application/grpc");
    literal(&mut first, 0x7a, None, b"grpc-go/1.60.0");
    literal(&mut first, 0x40, Some(b"te"), b"trailers");
    literal(&mut first, 0x40, Some(b"grpc-accept-encoding"), b"gzip");
    let mut second = vec![0x83, 0x86, 0xc3, 0xc2, 0xc1, 0xc0, 0xbf, 0xbe];
    literal(&mut second, 0x00, Some(b"grpc-timeout"), b"999847u");
    literal(
        &mut second,
        0x00,
        Some(b"traceparent"),
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    literal(
        &mut second,
        0x00,
        Some(b"x-b3-traceid"),
        b"463ac35c9f6413ad",
    );
    literal(&mut second, 0x00, Some(b"x-b3-spanid"), b"a2fb4a1d1a96d312");
    // A Huffman-coded "www.example.com" (the string of RFC 7541 C.4.1) with the static name
    // :authority (index 1), not indexed.
    second.extend_from_slice(&[
        0x01, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
    ]);
    let first = Bytes::from(first);
    let second = Bytes::from(second);

    let mut d = Decoder::new();
    d.decode(&first, |_| {}).expect("the first request decodes");
    // The first reference to an entry makes its allocation shared (once per entry).
    d.decode(&second, |_| {}).expect("the second request decodes");
    let runs = 1_000_000;
    let allocs = ALLOCS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut fields = 0;
    for _ in 0..runs {
        d.decode(&second, |f| {
            assert!(f.name.is_some() && f.value.is_some(), "an unknown field");
            fields += 1;
            black_box(f);
        })
        .expect("the second request decodes");
    }
    let elapsed = started.elapsed();
    let per_block = (ALLOCS.load(Ordering::Relaxed) - allocs) as f64 / f64::from(runs);
    println!(
        "{} fields per block, {:.0} ns per block, {per_block:.2} allocations per block",
        fields / runs,
        elapsed.as_nanos() as f64 / f64::from(runs),
    );
    assert!(
        per_block <= 1.0,
        "decoding the block allocates {per_block} times (expected 1: its Huffman-coded value)"
    );
}
