//! `regatta backup`: a consistent backup of the cluster's state, streamed
//! from one member into a file, checked whole before it is kept.

use std::path::PathBuf;

use crate::Endpoint;

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub at: Endpoint,
    /// The file to write (replaced only once the new backup checks out).
    #[arg(long)]
    pub out: PathBuf,
}

pub async fn run(args: &BackupArgs) -> Result<(), String> {
    // A backup may take long to stream: no overall timeout beyond the
    // member's own for the read barrier.
    let client = args
        .at
        .client()?
        .timeout(std::time::Duration::from_secs(3600));
    let partial = args.out.with_extension("partial");
    let mut file = std::fs::File::create(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let started = std::time::Instant::now();
    let downloaded = client.download("/cluster/backup", &mut file).await;
    let checked = downloaded.map_err(|e| e.to_string()).and_then(|size| {
        file.sync_all()
            .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        let reopened = std::fs::File::open(&partial)
            .map_err(|e| format!("cannot read {}: {e}", partial.display()))?;
        let header = regatta::backup::verify(std::io::BufReader::new(reopened))
            .map_err(|e| format!("the backup received does not check out: {e}"))?;
        Ok((size, header))
    });
    let (size, header) = match checked {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &args.out)
        .map_err(|e| format!("cannot move the backup to {}: {e}", args.out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backup of cluster {:#x} at index {} (term {}): {} bytes in {:.2} s ({:.0} MB/s) written to {}",
        header.cluster_id,
        header.last_included.index,
        header.last_included.term,
        size,
        secs,
        size as f64 / 1e6 / secs.max(1e-9),
        args.out.display()
    );
    Ok(())
}
