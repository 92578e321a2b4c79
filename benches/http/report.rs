//! The tables.

use std::path::Path;

use crate::measure::{measure_row, Target};
use crate::support::medians;
use crate::{Plan, WRITE_PATH};

pub(crate) fn table(plan: &Plan, binary: &Path, target: Target) -> Result<(), String> {
    match target {
        Target::Leader => {
            println!("## HTTP writes through the leader: 3 `counter serve` processes\n");
            println!("Every client sends `POST {WRITE_PATH}` to the leader's HTTP address.\n");
            println!("| clients | writes/s | p50 latency | p99 latency | non-200 | I/O errors |");
            println!("|--------:|---------:|------------:|------------:|--------:|-----------:|");
        }
        Target::Follower => {
            println!("## HTTP writes through one follower\n");
            println!(
                "Every client sends `POST {WRITE_PATH}` to the same follower, which forwards \
                 each write to the leader over the Raft transport.\n"
            );
            println!("| clients | writes/s | p50 latency | p99 latency | non-200 | I/O errors |");
            println!("|--------:|---------:|------------:|------------:|--------:|-----------:|");
        }
        Target::Spread => {
            println!("## HTTP writes spread over all three nodes\n");
            println!(
                "Client `i` sends `POST {WRITE_PATH}` to node `i mod 3`, the followers first; \
                 a follower forwards the write to the leader over the Raft transport.\n"
            );
            println!(
                "| clients | on followers | writes/s | p50 latency | p99 latency | non-200 | \
                 I/O errors |"
            );
            println!(
                "|--------:|-------------:|---------:|------------:|------------:|--------:|\
                 -----------:|"
            );
        }
    }
    let mut notes = Vec::new();
    for &clients in &plan.clients {
        let row = measure_row(plan, binary, target, clients)
            .map_err(|e| format!("{clients} clients → {}: {e}", target.name()))?;
        notes.extend(row.notes);
        let (rate, p50, p99) = medians(&row.samples);
        let (non_200, io) = (row.non_200, row.io_errors);
        match target {
            Target::Leader | Target::Follower => println!(
                "| {clients:>7} | {rate:>8} | {p50:>11} | {p99:>11} | {non_200:>7} | {io:>10} |"
            ),
            Target::Spread => {
                let on = format!("{}/{clients}", row.on_followers);
                println!(
                    "| {clients:>7} | {on:>12} | {rate:>8} | {p50:>11} | {p99:>11} | \
                     {non_200:>7} | {io:>10} |"
                )
            }
        }
    }
    println!();
    for note in notes {
        println!("note: {note}");
    }
    Ok(())
}
