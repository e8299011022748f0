"""NumPy reference of each GPU op, same argument order as its wrapper in vkmtp.ops."""
