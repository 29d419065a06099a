//! The sympy branch of `mathruler.grader` (<https://pypi.org/project/mathruler/>):
//! `parse_expr(expr.replace("^", "**"), transformations=standard_transformations +
//! (implicit_multiplication_application,))` followed by `simplify(diff) == 0`.
//!
//! Tokenisation follows Python's tokenizer (`05` is `0` then `5`, `2x` is `2 x`);
//! names follow `auto_symbol` + `split_symbols` (unknown multi-letter names without
//! `_` that are not Greek letter names split into one symbol per char, digit runs
//! becoming numbers); juxtaposition multiplies; `!` is factorial. Equality is
//! decided exactly over rationals at several variable assignments (`pi` is treated
//! as an independent transcendental), or numerically with a tight tolerance.

use super::eval::{Num, R, Undefined, factorial};
use super::tokens::{Tok, tokenize};

const MAX_DEPTH: usize = 200;
const MAX_TOKENS: usize = 1000;

#[derive(Debug)]
enum Node {
    Num(Num, bool),
    Sym(usize),
    Pi,
    Neg(Box<Node>),
    Bin(char, Box<Node>, Box<Node>),
    Fact(Box<Node>),
    Call(&'static str, Box<Node>),
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
    depth: usize,
    syms: Vec<String>,
}

type P = Result<Node, Undefined>;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.peek(), Some(Tok::Op(o)) if *o == op);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn enter(&mut self) -> Result<(), Undefined> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Undefined)
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> P {
        self.enter()?;
        let mut lhs = self.term()?;
        loop {
            let op = if self.eat("+") {
                '+'
            } else if self.eat("-") {
                '-'
            } else {
                break;
            };
            lhs = Node::Bin(op, Box::new(lhs), Box::new(self.term()?));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn term(&mut self) -> P {
        let mut lhs = self.unary()?;
        loop {
            let op = if self.eat("*") {
                '*'
            } else if self.eat("/") {
                '/'
            } else if matches!(
                self.peek(),
                Some(Tok::Num(..) | Tok::Sym(_) | Tok::Pi | Tok::Func(_))
            ) || matches!(self.peek(), Some(Tok::Op("(")))
            {
                '*' // implicit multiplication
            } else {
                break;
            };
            lhs = Node::Bin(op, Box::new(lhs), Box::new(self.unary()?));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> P {
        self.enter()?;
        let node = if self.eat("-") {
            Node::Neg(Box::new(self.unary()?))
        } else if self.eat("+") {
            self.unary()?
        } else {
            let base = self.postfix()?;
            if self.eat("**") {
                Node::Bin('^', Box::new(base), Box::new(self.unary()?))
            } else {
                base
            }
        };
        self.depth -= 1;
        Ok(node)
    }

    fn postfix(&mut self) -> P {
        let mut node = self.atom()?;
        while self.eat("!") {
            node = Node::Fact(Box::new(node));
        }
        Ok(node)
    }

    fn atom(&mut self) -> P {
        let tok = self.peek().cloned().ok_or(Undefined)?;
        self.i += 1;
        match tok {
            Tok::Num(n, f) => Ok(Node::Num(n, f)),
            Tok::Pi => Ok(Node::Pi),
            Tok::Sym(s) => {
                let idx = self
                    .syms
                    .iter()
                    .position(|x| *x == s)
                    .unwrap_or(self.syms.len());
                if idx == self.syms.len() {
                    self.syms.push(s);
                }
                Ok(Node::Sym(idx))
            }
            Tok::Func(f) => {
                if !self.eat("(") {
                    return Err(Undefined);
                }
                let arg = self.expr()?;
                if !self.eat(")") {
                    return Err(Undefined);
                }
                Ok(Node::Call(f, Box::new(arg)))
            }
            Tok::Op("(") => {
                let inner = self.expr()?;
                if self.eat(")") {
                    Ok(inner)
                } else {
                    Err(Undefined)
                }
            }
            Tok::Op(_) => Err(Undefined),
        }
    }
}

struct Env {
    vars: Vec<Num>,
    pi: Num,
    float_lit: bool,
    irrational: bool,
}

impl Env {
    fn eval(&mut self, n: &Node) -> R {
        match n {
            Node::Num(v, f) => {
                self.float_lit |= *f;
                Ok(*v)
            }
            Node::Sym(i) => self.vars.get(*i).copied().ok_or(Undefined),
            Node::Pi => Ok(self.pi),
            Node::Neg(a) => self.eval(a)?.neg(),
            Node::Fact(a) => factorial(self.eval(a)?),
            Node::Bin(op, a, b) => {
                let (x, y) = (self.eval(a)?, self.eval(b)?);
                match op {
                    '+' => x.add(y),
                    '-' => x.sub(y),
                    '*' => x.mul(y),
                    '/' => x.div(y),
                    _ => {
                        let (v, irr) = x.pow(y)?;
                        self.irrational |= irr;
                        Ok(v)
                    }
                }
            }
            Node::Call(f, a) => {
                let x = self.eval(a)?;
                self.call(f, x)
            }
        }
    }

    fn call(&mut self, f: &str, x: Num) -> R {
        let approx = |v: f64| {
            if v.is_finite() {
                Ok(Num::F(v))
            } else {
                Err(Undefined)
            }
        };
        match f {
            "sqrt" => {
                let (v, irr) = x.pow(Num::ratio(1, 2)?)?;
                self.irrational |= irr;
                Ok(v)
            }
            "frac" => match x {
                Num::Q(n, d) => Num::ratio(n.rem_euclid(d), d),
                Num::F(v) => approx(v - v.floor()),
            },
            "re" => Ok(x),
            "im" => Ok(Num::int(0)),
            "ln" if x == Num::int(1) => Ok(Num::int(0)),
            "ln" if x.to_f64() > 0.0 => {
                self.irrational = true;
                approx(x.to_f64().ln())
            }
            "csc" => {
                self.irrational = true;
                approx(1.0 / x.to_f64().sin())
            }
            _ => Err(Undefined),
        }
    }
}

/// Deterministic pseudo-random rational for variable `var` at sample `point`.
fn sample(point: u64, var: u64) -> Num {
    let h = point
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(var.wrapping_mul(0x85EB_CA6B))
        .wrapping_add(0x2545_F491)
        .wrapping_mul(0x2545_F491_4F6C_DD1D);
    let num = i128::from((h >> 20) % 89 + 3);
    let den = i128::from((h >> 40) % 11 + 2);
    let sign = if point.wrapping_add(var) % 3 == 1 {
        -1
    } else {
        1
    };
    Num::ratio(sign * num, den).unwrap_or(Num::int(1))
}

/// Whether `(a)-(b)` (already checked by `should_allow_eval`) simplifies to zero.
pub(super) fn difference_is_zero(expr: &str) -> bool {
    let Ok(toks) = tokenize(&expr.replace('^', "**")) else {
        return false;
    };
    if toks.len() > MAX_TOKENS {
        return false; // bounds the recursion depth of evaluation
    }
    let has_pi = toks.contains(&Tok::Pi);
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
        syms: Vec::new(),
    };
    let Ok(root) = p.expr() else {
        return false;
    };
    if p.i != p.toks.len() {
        return false;
    }
    let symbolic = !p.syms.is_empty() || has_pi;
    let points = if symbolic { 7 } else { 1 };
    let mut valid = 0;
    for point in 0..points {
        let mut env = Env {
            vars: (0..p.syms.len() as u64).map(|v| sample(point, v)).collect(),
            pi: Num::ratio(311 + 7 * i128::from(point as u8), 99).unwrap_or(Num::int(3)),
            float_lit: false,
            irrational: false,
        };
        let (diff, scale) = match &root {
            Node::Bin('-', a, b) => match (env.eval(a), env.eval(b)) {
                (Ok(x), Ok(y)) => (x.sub(y), x.to_f64().abs().max(y.to_f64().abs()).max(1.0)),
                _ => continue,
            },
            other => (env.eval(other), 1.0),
        };
        let Ok(diff) = diff else { continue };
        valid += 1;
        let zero = match diff {
            Num::Q(n, _) => n == 0,
            Num::F(v) if env.float_lit && !symbolic && !env.irrational => v == 0.0,
            Num::F(v) if env.float_lit => v.abs() <= 1e-12 * scale,
            Num::F(v) => v.abs() <= 1e-9 * scale,
        };
        if !zero {
            return false;
        }
    }
    valid >= if symbolic { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::difference_is_zero as z;

    #[test]
    fn sympy_like_equalities() {
        assert!(z("(2x+1)-(1+2x)"));
        assert!(z("(x**2-1)-((x-1)(x+1))"));
        assert!(z("(x(x+1))-(x**2+x)"));
        assert!(z("(0.5)-(1/2)"));
        assert!(!z("(0.1+0.2)-(0.3)"));
        assert!(z("(sqrt(8))-(2sqrt(2))"));
        assert!(z("(5!)-(120)"));
        assert!(z("(2**-1)-(1/2)"));
        assert!(!z("(05)-(5)"));
        assert!(!z("(sqrt(x**2))-(x)"));
        assert!(!z("(sqrt2)-(sqrt(2))"));
        assert!(z("(xy)-(yx)"));
        assert!(!z("(1/0)-(1/0)"));
        assert!(!z("(oo)-(oo)"));
        assert!(z("(1e3)-(1000)"));
        assert!(!z("(2pi)-(6.283185307179586)"));
        assert!(z("(0.5pi)-(pi/2)"));
        assert!(!z("((1,2))-((1,2))"));
        assert!(!z("(x=2)-(2)"));
        assert!(!z("(2**99999999)-(1)"));
        assert!(!z(&format!("({})-(1)", "1+".repeat(100_000) + "1")));
    }
}
