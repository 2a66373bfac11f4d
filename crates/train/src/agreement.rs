//! How close two computations of the same model are: the same model's
//! gradients by two methods (memory replay vs full BPTT), or on two backends
//! (a GPU against the CPU). Errors are relative L2 norms.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// A tensor's values as `f64`, whatever its float type (f32, bf16, …).
pub fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f64> {
    tensor
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("converted to f64")
}

/// The gradient of every float parameter of `model` in `grads`, in the
/// module's visiting order (the same on every backend for the same
/// architecture); a parameter without a gradient gives an empty list.
pub fn parameter_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Vec<Vec<f64>> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<Vec<f64>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let grad = self.grads.get::<B::InnerBackend, D>(param.id);
            self.out.push(grad.map(values).unwrap_or_default());
        }
    }
    let mut collect = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut collect);
    collect.out
}

/// `‖a − b‖` and `‖a‖`; a missing entry (a shorter list, a parameter with
/// no gradient) counts as zero.
fn diff_and_norm(a: &[f64], b: &[f64]) -> (f64, f64) {
    let get = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
    let n = a.len().max(b.len());
    let diff = (0..n).map(|i| (get(a, i) - get(b, i)).powi(2)).sum::<f64>();
    let norm = a.iter().map(|x| x * x).sum::<f64>();
    (diff.sqrt(), norm.sqrt())
}

/// `‖a − b‖ / ‖a‖` (`a` is the reference; 0 when both are zero). NaN
/// anywhere gives NaN, so a broken computation never looks close.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let (diff, norm) = diff_and_norm(a, b);
    if diff == 0.0 {
        return 0.0;
    }
    diff / norm.max(f64::MIN_POSITIVE)
}

/// The worst relative error over the parameters of two gradient lists
/// ([`parameter_gradients`]), `reference` first. Each parameter's norm is
/// floored at `floor` × the whole reference gradient's norm: a gradient that
/// is zero in exact arithmetic (a key bias, which softmax ignores) is float
/// noise on both sides. Lists of different lengths are a mismatch (infinite
/// error).
pub fn worst_parameter_error(reference: &[Vec<f64>], other: &[Vec<f64>], floor: f64) -> f64 {
    if reference.len() != other.len() {
        return f64::INFINITY;
    }
    let pairs: Vec<(f64, f64)> = reference
        .iter()
        .zip(other)
        .filter(|(a, b)| !(a.is_empty() && b.is_empty()))
        .map(|(a, b)| diff_and_norm(a, b))
        .collect();
    let total = pairs.iter().map(|(_, n)| n * n).sum::<f64>().sqrt();
    pairs
        .iter()
        .map(|&(diff, norm)| {
            if diff == 0.0 {
                0.0
            } else {
                diff / norm.max(floor * total).max(f64::MIN_POSITIVE)
            }
        })
        .fold(0.0, |worst: f64, e| {
            if worst.is_nan() || e.is_nan() {
                f64::NAN
            } else {
                worst.max(e)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_is_the_norm_ratio() {
        // ‖(3, 4)‖ = 5; b − a = (0, −1).
        assert_eq!(relative_error(&[3.0, 4.0], &[3.0, 3.0]), 0.2);
        assert_eq!(relative_error(&[0.0], &[0.0]), 0.0);
        assert_eq!(relative_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        // A missing entry counts as zero.
        assert_eq!(relative_error(&[3.0, 4.0], &[3.0]), 0.8);
        assert!(relative_error(&[1.0], &[f64::NAN]).is_nan());
        // Off from a zero reference: as large as it gets.
        assert!(relative_error(&[0.0], &[1.0]) > 1e300);
    }

    #[test]
    fn worst_parameter_error_floors_tiny_gradients() {
        let reference = vec![vec![3.0, 4.0], vec![1e-9], vec![]];
        // The first parameter is 20% off; the second is off by 1e-9, which is
        // 100% of itself but 2e-10 of the whole gradient (‖·‖ ≈ 5).
        let other = vec![vec![3.0, 3.0], vec![2e-9], vec![]];
        assert_eq!(worst_parameter_error(&reference, &other, 0.0), 1.0);
        let floored = worst_parameter_error(&reference, &other, 1e-4);
        assert!((floored - 0.2).abs() < 1e-12, "{floored}");
        assert_eq!(worst_parameter_error(&reference, &reference, 1e-4), 0.0);
        assert!(worst_parameter_error(&reference, &other[..2], 1e-4).is_infinite());
        let nan = vec![vec![3.0, 4.0], vec![f64::NAN], vec![]];
        assert!(worst_parameter_error(&reference, &nan, 1e-4).is_nan());
    }

    #[test]
    fn parameter_gradients_follow_the_module() {
        use burn::nn::{Linear, LinearConfig};
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let device = Default::default();
        let linear: Linear<AB> = LinearConfig::new(2, 1).init(&device);
        let x = Tensor::<AB, 2>::from_floats([[1.0, 2.0], [3.0, 5.0]], &device);
        // d(sum(x W + b))/dW = column sums of x; d/db = rows.
        let loss = linear.forward(x).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &linear);
        let got = parameter_gradients(&linear, &grads);
        assert_eq!(got, vec![vec![4.0, 7.0], vec![2.0]]);
    }
}
