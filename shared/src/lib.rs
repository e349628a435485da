//! users library
