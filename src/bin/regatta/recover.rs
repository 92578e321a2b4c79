//! `regatta recover`: lost-quorum recovery of a stopped survivor's data
//! directory (see `regatta::recovery`).

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RecoverArgs {
    /// The survivor's data directory (its node must be stopped).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The node id the directory belongs to.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The service's cluster name, as stamped on the directory (the
    /// examples: counter, queue, kv).
    #[arg(long)]
    pub cluster_name: String,
    /// Only print what the directory holds and what would be written.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: &RecoverArgs) -> Result<(), String> {
    let r = regatta::recovery::recover(&args.data_dir, &args.cluster_name, args.id, args.dry_run)
        .map_err(|e| e.to_string())?;
    let voters = |m: &regatta::Membership| format!("{:?}", m.voters);
    println!(
        "{}: last entry {} (term {}); voters {}",
        args.data_dir.display(),
        r.last_log_id.index,
        r.last_log_id.term,
        voters(&r.old_membership)
    );
    if args.dry_run {
        println!(
            "would make node {} the only voter, with a configuration entry at index {} (term {})",
            args.id, r.written_at.index, r.written_at.term
        );
        return Ok(());
    }
    println!(
        "node {} is now the only voter (configuration at index {}, term {}); start it as before",
        args.id, r.written_at.index, r.written_at.term
    );
    eprintln!(
        "WARNING: writes acknowledged by the lost members that this node never received \
         (after index {}) are gone, and entries it held that were never committed now \
         commit. Never start a lost member on its old directory: add it back on a new, \
         empty one (`regatta add`).",
        r.last_log_id.index
    );
    Ok(())
}
