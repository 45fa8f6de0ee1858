//! JSON has no NaN or infinity: serde_json writes them as `null`. Records that can hold a non-finite
//! rate (a PPO iteration in which no episode finished) read `null` back as NaN with
//! `#[serde(deserialize_with = "crate::util::json_float::nan_if_null")]`.

use serde::{Deserialize, Deserializer};

/// A number, or NaN for `null`.
pub fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct R {
        #[serde(deserialize_with = "super::nan_if_null")]
        x: f64,
    }

    #[test]
    fn non_finite_numbers_come_back_as_nan() {
        for v in [f64::NAN, f64::NEG_INFINITY] {
            let text = serde_json::to_string(&R { x: v }).unwrap();
            assert_eq!(text, r#"{"x":null}"#);
            assert!(serde_json::from_str::<R>(&text).unwrap().x.is_nan());
        }
        assert_eq!(serde_json::from_str::<R>(r#"{"x":0.5}"#).unwrap().x, 0.5);
    }
}
