//! The file as written: serde structs that mirror `docs/scenarios.md` key for key. Unknown
//! keys are refused (`deny_unknown_fields`), and every value that validation may still refuse
//! keeps its span, so the error can name its line.

use serde::Deserialize;
use toml::Spanned;

use crate::hazard::Hazard;
use crate::number::Quantity;
use crate::register::Mechanism;
use crate::scenario::RegionKind;
use crate::step::StepKind;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    pub(crate) name: Spanned<String>,
    pub(crate) summary: String,
    pub(crate) description: String,
    pub(crate) vm: RawVm,
    #[serde(default, rename = "region")]
    pub(crate) regions: Vec<Spanned<RawRegion>>,
    #[serde(default, rename = "device")]
    pub(crate) devices: Vec<Spanned<RawDevice>>,
    #[serde(default, rename = "step")]
    pub(crate) steps: Vec<Spanned<RawStep>>,
    #[serde(default, rename = "expect")]
    pub(crate) expects: Vec<Spanned<RawExpect>>,
}

/// `[vm]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVm {
    pub(crate) kernel: Spanned<String>,
    pub(crate) vendor: Spanned<String>,
    pub(crate) guest_pat: Option<Spanned<Quantity>>,
    pub(crate) guest_mtrr: Option<Spanned<String>>,
}

/// `[[region]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub(crate) name: Spanned<String>,
    pub(crate) kind: RegionKind,
    pub(crate) gpa: Spanned<Quantity>,
    pub(crate) size: Spanned<Quantity>,
    #[serde(default)]
    pub(crate) noncoherent: bool,
    pub(crate) register: Option<Spanned<Vec<Mechanism>>>,
}

/// `[[device]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevice {
    pub(crate) name: Spanned<String>,
    pub(crate) snoop: bool,
}

/// `[[step]]`: every key any kind takes; which ones a kind accepts is checked afterwards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    #[serde(rename = "do")]
    pub(crate) kind: StepKind,
    pub(crate) region: Option<Spanned<String>>,
    pub(crate) device: Option<Spanned<String>>,
    pub(crate) offset: Option<Spanned<Quantity>>,
    pub(crate) len: Option<Spanned<Quantity>>,
    pub(crate) value: Option<Spanned<Quantity>>,
    pub(crate) pat_index: Option<Spanned<i64>>,
    pub(crate) flush: Option<Spanned<bool>>,
}

/// `[[expect]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpect {
    pub(crate) profiles: Vec<Spanned<String>>,
    pub(crate) vendor: Spanned<String>,
    pub(crate) verdicts: Vec<Hazard>,
}
