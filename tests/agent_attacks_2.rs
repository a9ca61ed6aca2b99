//! The second attack round on the agent (being written).

mod common;
