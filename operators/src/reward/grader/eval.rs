//! Numbers for the sympy-like equality check of `mathruler.grader`
//! (<https://pypi.org/project/mathruler/>): exact `i128` rationals where possible,
//! `f64` otherwise (irrational results, overflow, and sympy `Float` literals).

/// An exact rational (normalised, positive denominator) or a float.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Num {
    Q(i128, i128),
    F(f64),
}

/// Evaluation failure: division by zero, complex result, unsupported input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Undefined;

pub(super) type R = Result<Num, Undefined>;

const MAX_EXPONENT: i128 = 4096;

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

impl Num {
    pub(super) fn int(n: i128) -> Num {
        Num::Q(n, 1)
    }

    /// Normalised rational, or a float when `i128` cannot hold it.
    pub(super) fn ratio(n: i128, d: i128) -> R {
        if d == 0 {
            return Err(Undefined);
        }
        if n == i128::MIN || d == i128::MIN {
            return Ok(Num::F(n as f64 / d as f64));
        }
        let g = gcd(n, d).max(1);
        let (n, d) = (n / g, d / g);
        Ok(if d < 0 { Num::Q(-n, -d) } else { Num::Q(n, d) })
    }

    pub(super) fn to_f64(self) -> f64 {
        match self {
            Num::Q(n, d) => n as f64 / d as f64,
            Num::F(x) => x,
        }
    }

    pub(super) fn is_zero(self) -> bool {
        match self {
            Num::Q(n, _) => n == 0,
            Num::F(x) => x == 0.0,
        }
    }

    fn float(x: f64) -> R {
        if x.is_finite() {
            Ok(Num::F(x))
        } else {
            Err(Undefined)
        }
    }

    pub(super) fn add(self, o: Num) -> R {
        if let (Num::Q(a, b), Num::Q(c, d)) = (self, o) {
            let num = a
                .checked_mul(d)
                .zip(c.checked_mul(b))
                .and_then(|(x, y)| x.checked_add(y));
            if let (Some(num), Some(den)) = (num, b.checked_mul(d)) {
                return Num::ratio(num, den);
            }
        }
        Num::float(self.to_f64() + o.to_f64())
    }

    pub(super) fn neg(self) -> R {
        match self {
            Num::Q(n, d) if n != i128::MIN => Ok(Num::Q(-n, d)),
            other => Num::float(-other.to_f64()),
        }
    }

    pub(super) fn sub(self, o: Num) -> R {
        self.add(o.neg()?)
    }

    pub(super) fn mul(self, o: Num) -> R {
        if let (Num::Q(a, b), Num::Q(c, d)) = (self, o)
            && let (Some(n), Some(m)) = (a.checked_mul(c), b.checked_mul(d))
        {
            return Num::ratio(n, m);
        }
        Num::float(self.to_f64() * o.to_f64())
    }

    pub(super) fn div(self, o: Num) -> R {
        if o.is_zero() {
            return Err(Undefined);
        }
        match o {
            Num::Q(c, d) => self.mul(Num::ratio(d, c)?),
            Num::F(y) => Num::float(self.to_f64() / y),
        }
    }

    /// `self ** e`; exact for rational bases with exact roots, else float.
    /// Returns the value and whether it is irrational (an inexact root).
    pub(super) fn pow(self, e: Num) -> Result<(Num, bool), Undefined> {
        if let (Num::Q(n, d), Num::Q(p, q)) = (self, e) {
            if p.unsigned_abs() > (MAX_EXPONENT as u128).saturating_mul(q.unsigned_abs()) {
                return Err(Undefined);
            }
            if n == 0 && p < 0 {
                return Err(Undefined);
            }
            if let Some((rn, rd)) = root(n, d, q) {
                let base = Num::Q(rn, rd);
                let mut acc = Num::int(1);
                for _ in 0..p.unsigned_abs() {
                    acc = acc.mul(base)?;
                }
                let v = if p < 0 { Num::int(1).div(acc)? } else { acc };
                return Ok((v, false));
            }
        }
        let (b, x) = (self.to_f64(), e.to_f64());
        if x.abs() > MAX_EXPONENT as f64 {
            return Err(Undefined);
        }
        if b < 0.0 && x.fract() != 0.0 {
            return Err(Undefined);
        }
        Ok((Num::float(b.powf(x))?, matches!(e, Num::Q(_, q) if q != 1)))
    }
}

/// Exact `q`-th root of `n/d` if it exists (real roots only).
fn root(n: i128, d: i128, q: i128) -> Option<(i128, i128)> {
    if q == 1 {
        return Some((n, d));
    }
    if q > 64 || (n < 0 && q % 2 == 0) {
        return None;
    }
    let int_root = |v: i128| -> Option<i128> {
        let neg = v < 0;
        let a = v.unsigned_abs();
        let guess = (a as f64).powf(1.0 / q as f64).round() as u128;
        for g in guess.saturating_sub(1)..=guess + 1 {
            let mut acc: u128 = 1;
            let mut ok = true;
            for _ in 0..q {
                match acc.checked_mul(g) {
                    Some(x) => acc = x,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && acc == a {
                let g = i128::try_from(g).ok()?;
                return Some(if neg { -g } else { g });
            }
        }
        None
    };
    Some((int_root(n)?, int_root(d)?))
}

/// `n!` for a non-negative integer (float above 33!, undefined past 170!).
pub(super) fn factorial(v: Num) -> R {
    let Num::Q(n, 1) = v else {
        return Err(Undefined);
    };
    if !(0..=170).contains(&n) {
        return Err(Undefined);
    }
    let mut acc = Num::int(1);
    for k in 2..=n {
        acc = acc.mul(Num::int(k))?;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rational_arithmetic() {
        let half = Num::ratio(1, 2).expect("ratio");
        let third = Num::ratio(1, 3).expect("ratio");
        assert_eq!(half.add(third), Ok(Num::Q(5, 6)));
        assert_eq!(half.div(Num::int(0)), Err(Undefined));
        assert_eq!(Num::int(8).pow(third), Ok((Num::int(2), false)));
        assert!(matches!(Num::int(2).pow(half), Ok((Num::F(_), true))));
        assert_eq!(Num::int(-4).pow(half), Err(Undefined));
        assert_eq!(Num::int(2).pow(Num::int(1_000_000)), Err(Undefined));
        assert_eq!(factorial(Num::int(5)), Ok(Num::int(120)));
    }

    #[test]
    fn overflow_falls_back_to_float() {
        let big = Num::int(i128::MAX / 2);
        assert!(matches!(big.mul(big), Ok(Num::F(_))));
        assert!(matches!(
            Num::int(10).pow(Num::int(60)),
            Ok((Num::F(_), false))
        ));
    }
}
