//! Evaluation in the real environment: policies on validation and test scenes, the choices made on
//! validation scenes, paired comparisons, the ceiling control, and data collection.

pub mod ceiling;
pub mod collect;
pub mod evaluate;
pub mod paired;
pub mod render;
pub mod selection;
