//! Kubernetes ServiceAccount tokens: `TokenReview` and `SubjectAccessReview`.
