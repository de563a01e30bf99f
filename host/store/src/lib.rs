//! Cluster state store (work in progress).
