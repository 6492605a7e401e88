/* The interposer's hot path in C: a method that hands a call straight to mpi4py's own method
 * when the buffer is known to go natively, and to the Python implementation otherwise.
 *
 * A Python method costs ~0.5 us per call on a slow core before it does anything; a halo
 * exchange makes 53 calls. FastCall(base, slow, cache_attr) is a method descriptor (no bound
 * object is made) with vectorcall; it takes the native route when the buffer (first argument
 * after self) is
 *   - a numpy array, bytes, bytearray or memoryview (a named type on host memory), or
 *   - a non-empty list [buf, ..., datatype] with cache[id(datatype)] is type(buf), where cache is
 *     the communicator's attribute `cache_attr` (filled by the Python side; left empty when
 *     the communicator has peers on other nodes, whose routes the Python side tells apart).
 * The call then goes on to `base` unchanged (keywords included); every other call to `slow`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *base;       /* mpi4py's method, e.g. MPI.Comm.Isend (called with self first) */
    PyObject *slow;       /* the Python implementation (a function taking self first) */
    PyObject *cache_attr; /* name of the communicator's dict: id(datatype) -> buffer type */
    PyObject *ndarray;    /* numpy.ndarray */
    PyObject *last_comm;  /* the communicator of the previous call, and its cache (strong refs): */
    PyObject *last_cache; /* halo loops call one communicator, so the attribute is read once */
    vectorcallfunc vectorcall;
} FastCall;

static int known_native(FastCall *f, PyObject *comm, PyObject *buf) {
    PyTypeObject *t = Py_TYPE(buf);
    if ((PyObject *)t == f->ndarray || t == &PyBytes_Type || t == &PyByteArray_Type || t == &PyMemoryView_Type)
        return 1;
    if (t != &PyList_Type || PyList_GET_SIZE(buf) == 0)
        return 0;
    PyObject *cache;
    if (comm == f->last_comm) {
        cache = Py_NewRef(f->last_cache);
    } else {
        cache = PyObject_GetAttr(comm, f->cache_attr);
        if (cache == NULL) { PyErr_Clear(); return 0; }
        Py_XSETREF(f->last_comm, Py_NewRef(comm));
        Py_XSETREF(f->last_cache, Py_NewRef(cache));
    }
    int hit = 0;
    if (PyDict_CheckExact(cache) && PyDict_GET_SIZE(cache) > 0) {
        PyObject *key = PyLong_FromVoidPtr(PyList_GET_ITEM(buf, PyList_GET_SIZE(buf) - 1));
        if (key != NULL) {
            PyObject *kind = PyDict_GetItemWithError(cache, key);  /* borrowed */
            hit = kind != NULL && kind == (PyObject *)Py_TYPE(PyList_GET_ITEM(buf, 0));
            Py_DECREF(key);
        }
    }
    Py_DECREF(cache);
    if (PyErr_Occurred()) { PyErr_Clear(); return 0; }
    return hit;
}

static PyObject *fastcall_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    FastCall *f = (FastCall *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs >= 2 && known_native(f, args[0], args[1]))
        return PyObject_Vectorcall(f->base, args, nargsf, kwnames);
    return PyObject_Vectorcall(f->slow, args, nargsf, kwnames);
}

static PyObject *fastcall_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(self);
        return self;
    }
    return PyMethod_New(self, obj);
}

static int fastcall_init(FastCall *f, PyObject *args, PyObject *kwds) {
    PyObject *base, *slow, *attr, *ndarray;
    if (!PyArg_ParseTuple(args, "OOUO", &base, &slow, &attr, &ndarray))
        return -1;
    Py_XSETREF(f->base, Py_NewRef(base));
    Py_XSETREF(f->slow, Py_NewRef(slow));
    Py_XSETREF(f->cache_attr, Py_NewRef(attr));
    Py_XSETREF(f->ndarray, Py_NewRef(ndarray));
    f->vectorcall = fastcall_vectorcall;
    return 0;
}

static void fastcall_dealloc(FastCall *f) {
    Py_XDECREF(f->base);
    Py_XDECREF(f->slow);
    Py_XDECREF(f->cache_attr);
    Py_XDECREF(f->ndarray);
    Py_XDECREF(f->last_comm);
    Py_XDECREF(f->last_cache);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyObject *fastcall_doc(FastCall *f, void *closure) {
    return PyObject_GetAttrString(f->slow, "__doc__");
}

static PyGetSetDef fastcall_getset[] = {
    {"__doc__", (getter)fastcall_doc, NULL, NULL, NULL},
    {NULL}
};

static PyTypeObject FastCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mpiforge.comms._fastpath.FastCall",
    .tp_basicsize = sizeof(FastCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_vectorcall_offset = offsetof(FastCall, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = fastcall_get,
    .tp_init = (initproc)fastcall_init,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)fastcall_dealloc,
    .tp_getset = fastcall_getset,
    .tp_doc = "FastCall(base, slow, cache_attr, ndarray): the interposer's native fast path.",
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The interposer's hot path in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&FastCallType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FastCallType);
    if (PyModule_AddObject(m, "FastCall", (PyObject *)&FastCallType) < 0) {
        Py_DECREF(&FastCallType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
