//! Generator for ParqueDB-layout sample databases (being written).
