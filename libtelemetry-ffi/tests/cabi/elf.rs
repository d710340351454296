//! Reads the built library (not the build script) and checks what C binaries depend on:
//! the SONAME, exactly the 7 exported symbols, each bound to its version node, and the
//! nodes themselves; and that a C program linked against it records versioned references.
//! The cdylib rust-lld links for `cargo build` has no version-node parents; the library
//! `install.sh` links must have them (`installed.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use object::elf::{self, FileHeader64};
use object::read::elf::{Dyn, FileHeader, Sym};
use object::read::SymbolIndex;
use object::Endianness;
use telemetrics_tests::cabi::find_libtelemetry_so;

use super::{program, Lang};

const SONAME: &str = "libtelemetry.so.4";
/// Symbol → version node, as in the C library's `telemetry.sym`.
const SYMBOLS: [(&str, &str); 7] = [
    ("tm_set_config_file", "TM_1_0_0"),
    ("tm_free_record", "TM_2_0_0"),
    ("tm_create_record", "TM_3_0_0"),
    ("tm_set_payload", "TM_3_0_0"),
    ("tm_send_record", "TM_3_0_0"),
    ("tm_set_event_id", "TM_4_0_0"),
    ("tm_is_opted_in", "TM_4_1_0"),
];
/// Version nodes in order; each inherits from the one before.
const NODES: [&str; 5] = ["TM_1_0_0", "TM_2_0_0", "TM_3_0_0", "TM_4_0_0", "TM_4_1_0"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the dynamic linker sees in one ELF file.
#[derive(Debug, Default)]
struct DynamicInfo {
    soname: Option<String>,
    needed: Vec<String>,
    /// Defined dynamic symbols → (version, hidden i.e. `@` rather than `@@`).
    exports: BTreeMap<String, (Option<String>, bool)>,
    /// Version definitions: (name, parents), BASE entry first.
    verdefs: Vec<(String, Vec<String>)>,
    /// Version needs: file → version names.
    verneeds: BTreeMap<String, BTreeSet<String>>,
}

fn read_dynamic(path: &Path) -> DynamicInfo {
    let data = std::fs::read(path).unwrap();
    let data = data.as_slice();
    let header = FileHeader64::<Endianness>::parse(data).expect("64-bit ELF");
    let endian = header.endian().unwrap();
    let sections = header.sections(endian, data).unwrap();
    let mut info = DynamicInfo::default();

    let (dynamic, dynstr_index) = sections.dynamic(endian, data).unwrap().expect(".dynamic");
    let dynstr = sections.strings(endian, data, dynstr_index).unwrap();
    for d in dynamic {
        let value = d.d_val(endian) as u32;
        match d.d_tag(endian) as u32 {
            elf::DT_SONAME => info.soname = Some(text(dynstr.get(value).unwrap())),
            elf::DT_NEEDED => info.needed.push(text(dynstr.get(value).unwrap())),
            _ => {}
        }
    }

    let versions = sections.versions(endian, data).unwrap();
    let dynsym = sections.symbols(endian, data, elf::SHT_DYNSYM).unwrap();
    for (i, sym) in dynsym.symbols().iter().enumerate() {
        let name = text(sym.name(endian, dynsym.strings()).unwrap());
        let shndx = sym.st_shndx(endian);
        let global = matches!(sym.st_bind(), elf::STB_GLOBAL | elf::STB_WEAK);
        // GNU ld also emits each version node as an absolute symbol; those are not exports.
        if name.is_empty() || shndx == elf::SHN_UNDEF || !global {
            continue;
        }
        if shndx == elf::SHN_ABS && NODES.contains(&name.as_str()) {
            continue;
        }
        let (version, hidden) = match &versions {
            Some(v) => {
                let idx = v.version_index(endian, SymbolIndex(i));
                let version = v.version(idx).unwrap().map(|v| text(v.name()));
                (version, idx.is_hidden())
            }
            None => (None, false),
        };
        info.exports.insert(name, (version, hidden));
    }

    if let Some((mut defs, strindex)) = sections.gnu_verdef(endian, data).unwrap() {
        let strings = sections.strings(endian, data, strindex).unwrap();
        while let Some((_, mut auxs)) = defs.next().unwrap() {
            let mut names = Vec::new();
            while let Some(aux) = auxs.next().unwrap() {
                names.push(text(aux.name(endian, strings).unwrap()));
            }
            let name = names.remove(0);
            info.verdefs.push((name, names));
        }
    }
    if let Some((mut needs, strindex)) = sections.gnu_verneed(endian, data).unwrap() {
        let strings = sections.strings(endian, data, strindex).unwrap();
        while let Some((need, mut auxs)) = needs.next().unwrap() {
            let file = text(need.file(endian, strings).unwrap());
            let set = info.verneeds.entry(file).or_default();
            while let Some(aux) = auxs.next().unwrap() {
                set.insert(text(aux.name(endian, strings).unwrap()));
            }
        }
    }
    info
}

/// What to require of the version nodes' parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parents {
    /// Each node after `TM_1_0_0` names the node before it, as GNU ld writes the C script.
    AsInC,
    /// None at all (rust-lld never writes them; the dynamic linker binds by version name
    /// only, so binaries load either way), or else exactly the C ones.
    AbsentOrAsInC,
}

/// Assert `so` has the SONAME, exports and version nodes of the C library.
pub fn assert_c_library_abi(so: &Path, parents: Parents) {
    let info = read_dynamic(so);
    assert_eq!(info.soname.as_deref(), Some(SONAME), "{}", so.display());

    let expected: BTreeMap<String, (Option<String>, bool)> = SYMBOLS
        .iter()
        .map(|(s, v)| (s.to_string(), (Some(v.to_string()), false)))
        .collect();
    assert_eq!(
        info.exports, expected,
        "exactly the 7 symbols, each the default (@@) version of its node"
    );

    let names: Vec<&str> = info.verdefs.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected_names = vec![SONAME];
    expected_names.extend(NODES);
    assert_eq!(
        names, expected_names,
        "BASE entry, then the 5 nodes in order"
    );
    assert!(info.verdefs[1].1.is_empty(), "TM_1_0_0 has no parent");
    for (i, (node, found)) in info.verdefs.iter().enumerate().skip(2) {
        let c_parent = vec![info.verdefs[i - 1].0.clone()];
        let ok = match parents {
            Parents::AsInC => found == &c_parent,
            Parents::AbsentOrAsInC => found.is_empty() || found == &c_parent,
        };
        assert!(
            ok,
            "parent of {node}: {found:?}, want {c_parent:?} ({parents:?})"
        );
    }
}

/// Assert the C program `exe` needs `libtelemetry.so.4` at the versions the sample uses.
pub fn assert_versioned_references(exe: &Path) {
    let info = read_dynamic(exe);
    assert!(info.needed.iter().any(|n| n == SONAME), "{:?}", info.needed);
    let versions = info
        .verneeds
        .get(SONAME)
        .expect("version needs on the library");
    let expected: BTreeSet<String> = ["TM_1_0_0", "TM_2_0_0", "TM_3_0_0", "TM_4_0_0"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(versions, &expected);
}

#[test]
fn library_has_the_soname_symbols_and_versions_of_the_c_library() {
    assert_c_library_abi(&find_libtelemetry_so(), Parents::AbsentOrAsInC);
}

#[test]
fn c_programs_record_versioned_references() {
    assert_versioned_references(&program("sample", Lang::C));
}
