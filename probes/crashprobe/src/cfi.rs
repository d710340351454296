//! The call-frame information of one image: its `.eh_frame` (with `.eh_frame_hdr`) and
//! `.debug_frame` (from the image or its debug file), with the base addresses gimli needs,
//! in the image's stated-address space.

use gimli::RunTimeEndian;
use object::{Object, ObjectSection};

use crate::image::{Image, Reader};

/// CFI sections of one image, in stated-address space.
pub struct UnwindTables<'a> {
    pub bases: gimli::BaseAddresses,
    pub eh_frame: Option<gimli::EhFrame<Reader<'a>>>,
    pub eh_frame_hdr: Option<gimli::ParsedEhFrameHdr<Reader<'a>>>,
    pub debug_frame: Option<gimli::DebugFrame<Reader<'a>>>,
}

impl<'a> UnwindTables<'a> {
    pub(crate) fn new(img: &Image<'a>) -> Option<UnwindTables<'a>> {
        let endian = if img.obj.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        // AArch64 CFI uses DW_CFA_AARCH64_negate_ra_state (pointer authentication), whose
        // opcode means something else elsewhere.
        let vendor = if img.obj.architecture() == object::Architecture::Aarch64 {
            gimli::Vendor::AArch64
        } else {
            gimli::Vendor::Default
        };
        let section = |obj: &object::File<'a>, name: &str| {
            obj.section_by_name(name)
                .and_then(|s| Some((s.address(), s.data().ok()?)))
                .filter(|(_, d)| !d.is_empty())
        };
        let mut bases = gimli::BaseAddresses::default();
        if let Some((addr, _)) = section(&img.obj, ".text") {
            bases = bases.set_text(addr);
        }
        if let Some((addr, _)) = section(&img.obj, ".got") {
            bases = bases.set_got(addr);
        }
        let eh_frame = section(&img.obj, ".eh_frame").map(|(addr, data)| {
            bases = bases.clone().set_eh_frame(addr);
            let mut f = gimli::EhFrame::new(data, endian);
            f.set_vendor(vendor);
            f
        });
        let eh_frame_hdr = section(&img.obj, ".eh_frame_hdr").and_then(|(addr, data)| {
            bases = bases.clone().set_eh_frame_hdr(addr);
            gimli::EhFrameHdr::new(data, endian).parse(&bases, 8).ok()
        });
        let debug_frame = section(&img.obj, ".debug_frame")
            .or_else(|| img.debug.as_ref().and_then(|d| section(d, ".debug_frame")))
            .map(|(_, data)| {
                let mut f = gimli::DebugFrame::new(data, endian);
                f.set_address_size(8);
                f.set_vendor(vendor);
                f
            });
        if eh_frame.is_none() && debug_frame.is_none() {
            return None;
        }
        Some(UnwindTables {
            bases,
            eh_frame,
            eh_frame_hdr,
            debug_frame,
        })
    }
}
