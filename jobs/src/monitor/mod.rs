//! Model monitoring: how far current inputs and predictions have drifted from the data a model
//! was trained on: the metrics ([`drift`]) and the comparison of two data sets on the cluster
//! ([`compare`]).

pub mod compare;
pub mod drift;
