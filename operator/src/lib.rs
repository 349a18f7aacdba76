//! picsift operator
