# placeholder: replaced by the transport (issue #3)
from picows.picows cimport WSListener, WSTransport, WSFrame

cdef class _Probe(WSListener):
    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        pass
