// decdec_rt._core.ModelFile: the .ddrt reader for Python (inspection, tests, the Python API).
// Exception translation is registered by the main module (bindings.cpp), not here.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "model_file.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// One metadata value as Python: int/float/bool/str; bytes for U8/I8 arrays; list otherwise.
nb::object scalar_to_py(const ddrt::Value& v) {
  using VT = ddrt::ValueType;
  switch (v.type) {
    case VT::BOOL: return nb::bool_(v.i != 0);
    case VT::F32: case VT::F64: return nb::float_(v.f);
    case VT::STRING: return nb::str(v.s.data(), v.s.size());
    case VT::U64: return nb::int_(v.u);
    default: return nb::int_(v.i);
  }
}

nb::object array_to_py(const ddrt::Value& v) {
  using VT = ddrt::ValueType;
  if (v.elem_type == VT::U8 || v.elem_type == VT::I8) return nb::bytes(v.bytes.data(), v.bytes.size());
  nb::list out;
  if (v.elem_type == VT::STRING) {
    for (const std::string& s : v.as) out.append(nb::str(s.data(), s.size()));
  } else if (v.elem_type == VT::F32 || v.elem_type == VT::F64) {
    for (double x : v.af) out.append(nb::float_(x));
  } else if (v.elem_type == VT::BOOL) {
    for (int64_t x : v.ai) out.append(nb::bool_(x != 0));
  } else if (v.elem_type == VT::U64) {
    for (int64_t x : v.ai) out.append(nb::int_((uint64_t)x));
  } else {
    for (int64_t x : v.ai) out.append(nb::int_(x));
  }
  return out;
}

nb::dict metadata_dict(const ddrt::ModelFile& f) {
  nb::dict d;
  for (const auto& [key, v] : f.metadata())
    d[nb::str(key.data(), key.size())] = v.type == ddrt::ValueType::ARRAY ? array_to_py(v) : scalar_to_py(v);
  return d;
}

nb::dict tensor_dict(const ddrt::TensorInfo& t) {
  nb::dict d;
  d["name"] = nb::str(t.name.data(), t.name.size());
  d["type"] = (uint32_t)t.type;
  d["type_name"] = ddrt::type_name(t.type);
  nb::list shape;
  for (int64_t s : t.shape) shape.append(s);
  d["shape"] = nb::tuple(shape);
  d["offset"] = t.offset;
  d["size"] = t.size;
  d["crc32"] = t.crc32;
  return d;
}

}  // namespace

void bind_model_file(nb::module_& m) {
  nb::class_<ddrt::ModelFile>(m, "ModelFile",
                              "A .ddrt model file, memory-mapped and validated (docs/format.md).\n"
                              "Raises FileNotFoundError when `path` does not exist and FormatError\n"
                              "(naming the field and byte offset) when the file is malformed.")
      .def(
          "__init__",
          [](ddrt::ModelFile* self, nb::object path, bool verify_checksums) {
            const std::string p = nb::cast<std::string>(nb::module_::import_("os").attr("fspath")(path));
            nb::gil_scoped_release release;  // the checksum pass reads the whole file
            new (self) ddrt::ModelFile(p, verify_checksums);
          },
          "path"_a, "verify_checksums"_a = true)
      .def_prop_ro("path", &ddrt::ModelFile::path)
      .def_prop_ro("version", &ddrt::ModelFile::version)
      .def_prop_ro("alignment", &ddrt::ModelFile::alignment)
      .def_prop_ro("file_size", &ddrt::ModelFile::file_size)
      .def_prop_ro("metadata", &metadata_dict, "dict key -> int/float/bool/str, bytes (u8/i8 arrays) or list")
      .def_prop_ro(
          "tensors",
          [](const ddrt::ModelFile& f) {
            nb::list out;
            for (const ddrt::TensorInfo& t : f.tensors()) out.append(tensor_dict(t));
            return out;
          },
          "list of dicts: name, type, type_name, shape, offset, size, crc32 (table order)")
      .def(
          "tensor_data",
          [](const ddrt::ModelFile& f, const std::string& name) {
            const ddrt::TensorInfo* t = f.find(name);
            if (!t) throw nb::key_error(("no tensor named '" + name + "' in " + f.path()).c_str());
            return nb::bytes((const char*)t->data, t->size);
          },
          "name"_a, "A copy of the tensor's bytes. KeyError when there is no such tensor.")
      .def("__repr__", [](const ddrt::ModelFile& f) {
        return "<ModelFile '" + f.path() + "': " + std::to_string(f.tensors().size()) + " tensors, " +
               std::to_string(f.metadata().size()) + " keys>";
      });
}
