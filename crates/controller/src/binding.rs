//! Which namespace a grant belongs to: the one it was first applied to, by UID, not merely by
//! name. A namespace deleted and created again under the same name (a new UID) may belong to
//! someone else; it gets nothing from the grant until an admin consents by naming its UID in
//! `spec.namespaceUID` (`kubectl byoc grant NAMESPACE --renew`). Pure: no API calls.

use byoc_api::ByocGrant;

/// What a grant does with the namespace of its name as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding<'a> {
    /// Apply the grant to the namespace with this UID: it is the one the grant is bound to, or
    /// the grant is not bound yet and binds to it (`status.namespaceUID`).
    Apply(&'a str),
    /// There is no namespace to apply to (yet).
    Wait,
    /// The namespace has UID `current`, but the grant is bound to `bound`: it was deleted and
    /// created again since. Nothing is applied until the binding is renewed.
    Replaced {
        /// The UID the grant is bound to.
        bound: &'a str,
        /// The UID of the namespace that exists now.
        current: &'a str,
    },
}

/// Decides, from the UID an admin consented to (`spec.namespaceUID`), the one the controller
/// recorded (`status.namespaceUID`) and the UID of the namespace that exists (`None` when
/// there is none). The admin's consent wins over the record.
pub fn decide<'a>(
    consented: Option<&'a str>,
    recorded: Option<&'a str>,
    namespace: Option<&'a str>,
) -> Binding<'a> {
    let Some(current) = namespace else {
        return Binding::Wait;
    };
    match consented.or(recorded) {
        Some(bound) if bound != current => Binding::Replaced { bound, current },
        _ => Binding::Apply(current),
    }
}

/// [`decide`] for `grant` and the UID of the namespace of its name (`None`: there is none).
pub fn of<'a>(grant: &'a ByocGrant, namespace: Option<&'a str>) -> Binding<'a> {
    let recorded = grant
        .status
        .as_ref()
        .and_then(|s| s.namespace_uid.as_deref());
    decide(grant.spec.namespace_uid.as_deref(), recorded, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        use Binding::*;
        let (a, b, c) = ("uid-a", "uid-b", "uid-c");
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Binding<'a>,
        );
        let cases: &[Case] = &[
            ("no namespace, never applied", None, None, None, Wait),
            ("no namespace, bound", None, Some(a), None, Wait),
            ("no namespace, consented", Some(a), None, None, Wait),
            (
                "first namespace: binds to it",
                None,
                None,
                Some(a),
                Apply(a),
            ),
            ("the bound namespace", None, Some(a), Some(a), Apply(a)),
            (
                "recreated namespace",
                None,
                Some(a),
                Some(b),
                Replaced {
                    bound: a,
                    current: b,
                },
            ),
            (
                "renewed to the new one",
                Some(b),
                Some(a),
                Some(b),
                Apply(b),
            ),
            (
                "renewed, then recreated again",
                Some(b),
                Some(b),
                Some(c),
                Replaced {
                    bound: b,
                    current: c,
                },
            ),
            (
                "consent to another UID than the namespace's",
                Some(c),
                None,
                Some(a),
                Replaced {
                    bound: c,
                    current: a,
                },
            ),
            (
                "consent ahead of the record",
                Some(a),
                Some(a),
                Some(a),
                Apply(a),
            ),
        ];
        for (what, consented, recorded, namespace, want) in cases {
            assert_eq!(decide(*consented, *recorded, *namespace), *want, "{what}");
        }
    }
}
