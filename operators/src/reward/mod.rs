//! Rewards: the reference's `math` and `r1v` rules and the `mathruler`-compatible answer grader.

pub mod grader;
pub mod rules;

pub use grader::{extract_boxed_content, grade_answer};
pub use rules::{RewardRule, RewardScore, score_response};
