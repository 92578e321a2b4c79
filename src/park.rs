//! The runtimes a node's threads run on. A thread out of work stays awake
//! for a moment before it sleeps, yielding the CPU to any other runnable
//! thread meanwhile: on a virtual machine, waking a CPU that halted costs
//! tens of microseconds, and a write crosses between a node's threads
//! several times. A message that arrives within the moment is handled
//! without that cost; one that arrives later wakes the thread as before.
//! [`crate::Config::idle_spin`] sets the moment (off by default;
//! measured in BENCHMARKS.md).

use std::time::{Duration, Instant};

/// A single-threaded runtime whose thread stays awake for `idle_spin`
/// before it parks.
pub(crate) fn runtime(idle_spin: Duration) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if !idle_spin.is_zero() {
        // Called just before the thread parks. A wake-up that comes in
        // meanwhile leaves a notification behind, so the park that
        // follows returns at once instead of sleeping.
        builder.on_thread_park(move || {
            let until = Instant::now() + idle_spin;
            while Instant::now() < until {
                std::thread::yield_now();
            }
        });
    }
    builder.build()
}

/// An actix system on this thread, on [`runtime`].
pub(crate) fn system(idle_spin: Duration) -> actix_rt::SystemRunner {
    actix_rt::System::with_tokio_rt(move || {
        runtime(idle_spin).expect("cannot start the node's runtime")
    })
}

/// An actix arbiter (a thread of its own), on [`runtime`].
pub(crate) fn arbiter(idle_spin: Duration) -> actix_rt::Arbiter {
    actix_rt::Arbiter::with_tokio_rt(move || {
        runtime(idle_spin).expect("cannot start a node thread's runtime")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that spins before it parks still wakes for work sent from
    /// another thread, whether it comes during the spin or long after.
    #[test]
    fn a_spinning_runtime_still_wakes_for_work_from_other_threads() {
        let rt = runtime(Duration::from_micros(200)).unwrap();
        for delay_us in [0, 50, 5_000] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sender = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(delay_us));
                tx.send(delay_us).unwrap();
            });
            let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), rx).await });
            assert_eq!(got.unwrap().unwrap(), delay_us);
            sender.join().unwrap();
        }
    }
}
