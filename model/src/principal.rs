//! Principal components of feature rows, for the PCA detector and the
//! profile detector's relations.
//!
//! Why not `linfa_reduction::Pca`: it decomposes through LOBPCG, which on
//! rank-deficient rows (a constant metric, two metrics that move as one —
//! common in server telemetry) produces NaN internally and then panics
//! ("NaN values in array") inside training; `linfa_linalg`'s symmetric
//! eigensolver loops until convergence with no bound. Here the k × k
//! covariance is diagonalised by cyclic Jacobi rotations with a fixed
//! bound on sweeps: it always ends, never panics, and on finite rows
//! returns finite directions (an exactly constant column gets a zero
//! eigenvalue, not a NaN).

/// Most Jacobi sweeps; each sweep zeroes every off-diagonal pair once.
/// Convergence is quadratic: 10–15 sweeps reach f64 precision for the
/// matrix sizes models use.
const MAX_SWEEPS: usize = 64;

/// The principal components of some rows.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Per feature, the rows' mean.
    pub mean: Vec<f64>,
    /// The directions, strongest first: `directions[c]` is a unit vector
    /// of k values.
    pub directions: Vec<Vec<f64>>,
    /// Each direction's share of the total variance (0 for all when the
    /// rows do not vary).
    pub explained: Vec<f64>,
}

impl Principal {
    /// Fits `rows` (each of the same k finite features; callers check).
    /// Returns every direction (k of them), strongest first.
    pub fn fit(rows: &[Vec<f64>]) -> Principal {
        let k = rows.first().map_or(0, Vec::len);
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; k];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n;
            }
        }
        let mut cov = vec![0.0; k * k];
        for r in rows {
            for i in 0..k {
                let di = r[i] - mean[i];
                for j in i..k {
                    cov[i * k + j] += di * (r[j] - mean[j]) / n;
                }
            }
        }
        for i in 0..k {
            for j in 0..i {
                cov[i * k + j] = cov[j * k + i];
            }
        }
        let (values, vectors) = symmetric_eigen(cov, k);
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        let explained = order
            .iter()
            .map(|&c| {
                if total > 0.0 {
                    values[c].max(0.0) / total
                } else {
                    0.0
                }
            })
            .collect();
        let directions = order
            .iter()
            .map(|&c| (0..k).map(|i| vectors[i * k + c]).collect())
            .collect();
        Principal {
            mean,
            directions,
            explained,
        }
    }

    /// How many of the strongest directions explain at least `share` of
    /// the variance (at least 1 when there is a feature).
    pub fn components_for(&self, share: f64) -> usize {
        let mut total = 0.0;
        let mut r = 0;
        while r < self.explained.len() && total < share {
            total += self.explained[r];
            r += 1;
        }
        r.max(usize::from(!self.directions.is_empty()))
    }
}

/// Eigenvalues and eigenvectors of the symmetric k × k matrix `a`
/// (row-major) by cyclic Jacobi rotations: the values unsorted, and the
/// vectors as the columns of a row-major k × k matrix.
fn symmetric_eigen(mut a: Vec<f64>, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    if scale == 0.0 || !scale.is_finite() {
        return ((0..k).map(|i| a[i * k + i]).collect(), v);
    }
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j] * a[i * k + j])
            .sum::<f64>()
            .sqrt();
        if off <= f64::EPSILON * scale {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan's
                // symmetric Schur decomposition).
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..k).map(|i| a[i * k + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn finds_the_direction_rows_vary_along() {
        // Points along (1, 2, 0) plus a little noise along (0, 0, 1).
        let rows: Vec<Vec<f64>> = (0..200)
            .map(|i| {
                let t = i as f64 / 10.0 - 10.0;
                vec![t, 2.0 * t, ((i * 7919) % 13) as f64 / 100.0]
            })
            .collect();
        let p = Principal::fit(&rows);
        let d = &p.directions[0];
        let want = [1.0 / 5f64.sqrt(), 2.0 / 5f64.sqrt(), 0.0];
        assert!((dot(d, &want).abs() - 1.0).abs() < 1e-6, "{d:?}");
        assert!(p.explained[0] > 0.99, "{:?}", p.explained);
        assert_eq!(p.components_for(0.95), 1);
        // Orthonormal directions.
        for a in 0..3 {
            for b in 0..3 {
                let want = if a == b { 1.0 } else { 0.0 };
                let got = dot(&p.directions[a], &p.directions[b]);
                assert!((got - want).abs() < 1e-9, "{a}·{b} = {got}");
            }
        }
    }

    #[test]
    fn degenerate_rows_give_finite_components() {
        // Constant, all equal, two columns moving as one, a single row:
        // each once made linfa's PCA panic or return NaN.
        let cases: Vec<Vec<Vec<f64>>> = vec![
            vec![vec![3.0, 3.0, 3.0]; 50],
            vec![vec![0.0; 4]; 20],
            (0..40).map(|i| vec![i as f64, i as f64, 1.0]).collect(),
            vec![vec![1.0, 2.0]],
            (0..30).map(|i| vec![1e12 + i as f64, 1e-12]).collect(),
        ];
        for rows in cases {
            let p = Principal::fit(&rows);
            assert!(
                p.directions.iter().flatten().all(|v| v.is_finite()),
                "{rows:?}"
            );
            assert!(p.explained.iter().all(|v| v.is_finite()));
            assert!(p.components_for(0.9) >= 1);
        }
        assert!(Principal::fit(&[]).directions.is_empty());
    }
}
