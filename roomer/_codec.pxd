# The compiled codec's C-level API, for other extension modules (roomer._fanout).

cdef bytes c_encode_frame(str room, str event, str dst, str src, object payload)
cdef bytes c_frame_header(Py_ssize_t size)
