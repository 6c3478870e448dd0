"""Reading images: local files, HTTP(S) and Label Studio URLs, with size limits."""
