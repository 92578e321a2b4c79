//! Randomized election timeouts (Raft §5.2).

use std::time::Duration;

/// Draws an election timeout uniformly from `[min, max)`, spread so that two
/// nodes rarely time out at once.
pub fn random_timeout(rng: &mut fastrand::Rng, min: Duration, max: Duration) -> Duration {
    let min_us = min.as_micros() as u64;
    let max_us = (max.as_micros() as u64).max(min_us + 1);
    Duration::from_micros(rng.u64(min_us..max_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_spread_and_rarely_collide() {
        let (min, max) = (Duration::from_millis(150), Duration::from_millis(300));
        let mut rng = fastrand::Rng::with_seed(7);
        let rounds = 1000;
        let mut collisions = 0;
        for _ in 0..rounds {
            // Five nodes draw; the election is split if the first two fire
            // within one network round trip (here 3 ms) of each other.
            let mut t: Vec<Duration> = (0..5).map(|_| random_timeout(&mut rng, min, max)).collect();
            assert!(t.iter().all(|d| *d >= min && *d < max));
            t.sort();
            if t[1] - t[0] < Duration::from_millis(3) {
                collisions += 1;
            }
        }
        assert!(
            collisions * 100 <= rounds * 30,
            "{collisions} of {rounds} rounds had two nodes time out at once"
        );
    }
}
