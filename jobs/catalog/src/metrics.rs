//! Classifier metrics: ROC AUC, accuracy and log loss.

/// Metrics of a binary classifier on labelled scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binary {
    /// Area under the ROC curve (ties count half).
    pub auc: f64,
    /// Share of rows whose score is on the label's side of 0.5.
    pub accuracy: f64,
    /// Mean negative log-likelihood, scores clamped away from 0 and 1.
    pub log_loss: f64,
    /// Rows.
    pub rows: usize,
    /// Share of positive labels.
    pub positive_rate: f64,
}

/// Computes [`Binary`] metrics of `scores` in [0, 1] against 0/1 `labels`.
pub fn binary(scores: &[f64], labels: &[bool]) -> Binary {
    let rows = scores.len().min(labels.len());
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Mann-Whitney U with average ranks for ties.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < rows {
        let mut j = i;
        while j + 1 < rows && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            if labels[order[k]] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let pos = labels[..rows].iter().filter(|l| **l).count() as f64;
    let neg = rows as f64 - pos;
    let auc = if pos == 0.0 || neg == 0.0 { f64::NAN } else { (rank_sum_pos - pos * (pos + 1.0) / 2.0) / (pos * neg) };
    let correct = (0..rows).filter(|r| (scores[*r] >= 0.5) == labels[*r]).count();
    let log_loss = (0..rows)
        .map(|r| {
            let p = scores[r].clamp(1e-7, 1.0 - 1e-7);
            if labels[r] { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / rows.max(1) as f64;
    Binary {
        auc,
        accuracy: correct as f64 / rows.max(1) as f64,
        log_loss,
        rows,
        positive_rate: pos / rows.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_rankings() {
        let perfect = binary(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]);
        assert_eq!(perfect.auc, 1.0);
        assert_eq!(perfect.accuracy, 1.0);
        let inverted = binary(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]);
        assert_eq!(inverted.auc, 0.0);
        // One positive ranked below one negative out of 2x2 pairs; ties count half.
        let mixed = binary(&[0.1, 0.6, 0.5, 0.9], &[false, false, true, true]);
        assert_eq!(mixed.auc, 0.75);
        let tied = binary(&[0.5, 0.5], &[false, true]);
        assert_eq!(tied.auc, 0.5);
        assert!(binary(&[0.3], &[true]).auc.is_nan());
    }
}
