//! Measures what content-defined chunking (the `fastcdc` crate, v2020)
//! would save over whole-file deduplication on pairs of file versions:
//! for each OLD NEW pair, the bytes of NEW a backup must store when OLD is
//! already in the repository.
//!
//! ```sh
//! cargo run --release -p pqsync-core --example chunking -- OLD NEW [OLD NEW ...]
//! ```

use std::collections::HashSet;

fn chunks(data: &[u8], avg: u32) -> Vec<(blake3::Hash, usize)> {
    fastcdc::v2020::FastCDC::new(data, avg / 4, avg, avg * 4)
        .map(|c| (blake3::hash(&data[c.offset..c.offset + c.length]), c.length))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        eprintln!("usage: chunking OLD NEW [OLD NEW ...]");
        std::process::exit(2);
    }
    let sizes = [16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024];
    print!("| new file | size | whole-file: stored |");
    for s in sizes {
        print!(" CDC avg {} KiB: stored (chunks) |", s / 1024);
    }
    println!();
    print!("|---|---:|---:|");
    for _ in sizes {
        print!("---:|");
    }
    println!();
    for pair in args.chunks(2) {
        let old = std::fs::read(&pair[0])?;
        let new = std::fs::read(&pair[1])?;
        let whole = if blake3::hash(&old) == blake3::hash(&new) {
            0
        } else {
            new.len()
        };
        print!("| {} | {} | {} |", pair[1], new.len(), whole);
        for avg in sizes {
            let known: HashSet<blake3::Hash> =
                chunks(&old, avg).into_iter().map(|(h, _)| h).collect();
            let mine = chunks(&new, avg);
            let stored: usize = mine
                .iter()
                .filter(|(h, _)| !known.contains(h))
                .map(|(_, n)| n)
                .sum();
            print!(
                " {} ({:.1}%, {}) |",
                stored,
                100.0 * stored as f64 / new.len().max(1) as f64,
                mine.len()
            );
        }
        println!();
    }
    Ok(())
}
