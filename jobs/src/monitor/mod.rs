//! Model monitoring: how far current inputs and predictions have drifted from the data a model
//! was trained on ([`drift`]).

pub mod drift;
