//! Leukocyte isolation (issue 3): classical colour masks and morphology.
