//! Tests of the conversion as a whole.
