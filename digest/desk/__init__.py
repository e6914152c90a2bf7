"""The operator's desk: preview, pre-flight (with the link check), test sends."""
