//! Min / median / max over the repetitions of one figure. Repetitions are
//! few (3 to 10), so a sorted copy is all it takes.

/// The spread of one figure over its repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Smallest sample.
    pub min: f64,
    /// Middle sample (mean of the two middle ones for an even count).
    pub median: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none or one is not a number.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        Some(Self { min: sorted[0], median, max: sorted[sorted.len() - 1] })
    }
}

/// Per-repetition ratios `tunnel[i] / direct[i]`: each tunnel run is compared
/// with the direct run next to it, so drift during the run cancels out.
pub fn ratios(tunnel: &[f64], direct: &[f64]) -> Vec<f64> {
    tunnel.iter().zip(direct).map(|(t, d)| if *d == 0.0 { f64::NAN } else { t / d }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count_takes_the_middle_sample() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
    }

    #[test]
    fn even_count_averages_the_two_middle_samples() {
        let s = Summary::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 10.0));
    }

    #[test]
    fn no_samples_or_nan_gives_none() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratios_pair_runs_by_repetition() {
        assert_eq!(ratios(&[1.0, 3.0], &[2.0, 6.0]), vec![0.5, 0.5]);
        assert!(ratios(&[1.0], &[0.0])[0].is_nan());
    }
}
