//! Unindexed filters and sorts (work in progress).
