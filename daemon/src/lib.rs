//! telemprobd and telempostd.
