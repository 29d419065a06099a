//! Argument-less LaTeX macro replacements used by the latex-to-text step.
//!
//! Follows `mathruler.grader` (<https://pypi.org/project/mathruler/>), which calls
//! `pylatexenc.latex2text.LatexNodes2Text().latex_to_text`. This table is the
//! pylatexenc 2.11 default `latex2text` context restricted to macros that take no
//! arguments and have a plain string replacement; entries are `name\x1freplacement`
//! separated by `\x1e`. Unknown macros render as the empty string.

const TABLE: &str = " \x1f \x1e#\x1f#\x1e$\x1f$\x1e&\x1f&\x1e,\x1f \x1e-\x1f\u{ad}\x1e:\x1f \x1e;\x1f \x1e\
AA\x1fÅ\x1eAE\x1fÆ\x1eAlpha\x1fΑ\x1eAngle\x1f⦜\x1eBeta\x1fΒ\x1eBumpeq\x1f≎\x1e\
CYRA\x1fА\x1eCYRABHCH\x1fҼ\x1eCYRABHCHDSC\x1fҾ\x1eCYRABHDZE\x1fӠ\x1eCYRABHHA\x1fҨ\x1e\
CYRAE\x1fӔ\x1eCYRB\x1fБ\x1eCYRBYUS\x1fѪ\x1eCYRC\x1fЦ\x1eCYRCH\x1fЧ\x1eCYRCHLDSC\x1fӋ\x1e\
CYRCHRDSC\x1fҶ\x1eCYRCHVCRS\x1fҸ\x1eCYRD\x1fД\x1eCYRDJE\x1fЂ\x1eCYRDZE\x1fЅ\x1e\
CYRDZHE\x1fЏ\x1eCYRE\x1fЕ\x1eCYREREV\x1fЭ\x1eCYRERY\x1fЫ\x1eCYRF\x1fФ\x1eCYRFITA\x1fѲ\x1e\
CYRG\x1fГ\x1eCYRGDSC\x1fӶ\x1eCYRGDSCHCRS\x1fӺ\x1eCYRGHCRS\x1fҒ\x1eCYRGHK\x1fҔ\x1e\
CYRGUP\x1fҐ\x1eCYRH\x1fХ\x1eCYRHDSC\x1fҲ\x1eCYRHHCRS\x1fӾ\x1eCYRHHK\x1fӼ\x1e\
CYRHRDSN\x1fЪ\x1eCYRI\x1fИ\x1eCYRIE\x1fЄ\x1eCYRII\x1fІ\x1eCYRISHRT\x1fЙ\x1eCYRIZH\x1fѴ\x1e\
CYRJE\x1fЈ\x1eCYRK\x1fК\x1eCYRKBEAK\x1fҠ\x1eCYRKDSC\x1fҚ\x1eCYRKHCRS\x1fҞ\x1e\
CYRKHK\x1fӃ\x1eCYRKVCRS\x1fҜ\x1eCYRL\x1fЛ\x1eCYRLDSC\x1fӅ\x1eCYRLJE\x1fЉ\x1eCYRM\x1fМ\x1e\
CYRMDSC\x1fӍ\x1eCYRN\x1fН\x1eCYRNDSC\x1fҢ\x1eCYRNG\x1fҤ\x1eCYRNHK\x1fӇ\x1eCYRNJE\x1fЊ\x1e\
CYRO\x1fО\x1eCYROTLD\x1fӨ\x1eCYRP\x1fП\x1eCYRPHK\x1fҦ\x1eCYRR\x1fР\x1eCYRRTICK\x1fҎ\x1e\
CYRS\x1fС\x1eCYRSCHWA\x1fӘ\x1eCYRSDSC\x1fҪ\x1eCYRSEMISFTSN\x1fҌ\x1eCYRSFTSN\x1fЬ\x1e\
CYRSH\x1fШ\x1eCYRSHCH\x1fЩ\x1eCYRSHHA\x1fҺ\x1eCYRT\x1fТ\x1eCYRTDSC\x1fҬ\x1e\
CYRTETSE\x1fҴ\x1eCYRTSHE\x1fЋ\x1eCYRU\x1fУ\x1eCYRUSHRT\x1fЎ\x1eCYRV\x1fВ\x1eCYRY\x1fҮ\x1e\
CYRYA\x1fЯ\x1eCYRYAT\x1fѢ\x1eCYRYHCRS\x1fҰ\x1eCYRYI\x1fЇ\x1eCYRYO\x1fЁ\x1eCYRYU\x1fЮ\x1e\
CYRZ\x1fЗ\x1eCYRZDSC\x1fҘ\x1eCYRZH\x1fЖ\x1eCYRZHDSC\x1fҖ\x1eCYRpalochka\x1fӀ\x1e\
Cap\x1f⋒\x1eChi\x1fΧ\x1eColon\x1f∷\x1eCup\x1f⋓\x1eDH\x1fÐ\x1eDJ\x1fĐ\x1eDelta\x1fΔ\x1e\
Digamma\x1fϜ\x1eDownArrowBar\x1f⤓\x1eDownArrowUpArrow\x1f⇵\x1eDownLeftRightVector\x1f⥐\x1e\
DownLeftTeeVector\x1f⥞\x1eDownLeftVectorBar\x1f⥖\x1eDownRightTeeVector\x1f⥟\x1e\
DownRightVectorBar\x1f⥗\x1eDownarrow\x1f⇓\x1eEpsilon\x1fΕ\x1eEqual\x1f⩵\x1eEta\x1fΗ\x1e\
Gamma\x1fΓ\x1eIJ\x1fĲ\x1eIdent\x1f𝕀\x1eIota\x1fΙ\x1eKappa\x1fΚ\x1eKoppa\x1fϞ\x1eL\x1fŁ\x1e\
Lambda\x1fΛ\x1eLeftDownTeeVector\x1f⥡\x1eLeftDownVectorBar\x1f⥙\x1e\
LeftRightVector\x1f⥎\x1eLeftTeeVector\x1f⥚\x1eLeftTriangleBar\x1f⧏\x1e\
LeftUpDownVector\x1f⥑\x1eLeftUpTeeVector\x1f⥠\x1eLeftUpVectorBar\x1f⥘\x1e\
LeftVectorBar\x1f⥒\x1eLeftarrow\x1f⇐\x1eLeftrightarrow\x1f⇔\x1eLleftarrow\x1f⇚\x1e\
Longleftarrow\x1f⟸\x1eLongleftrightarrow\x1f⟺\x1eLongrightarrow\x1f⟹\x1eLsh\x1f↰\x1e\
Mu\x1fΜ\x1eNG\x1fŊ\x1eNestedGreaterGreater\x1f⪢\x1eNestedLessLess\x1f⪡\x1eNu\x1fΝ\x1e\
O\x1fØ\x1eOE\x1fŒ\x1eOmega\x1fΩ\x1eOmicron\x1fΟ\x1ePhi\x1fΦ\x1ePi\x1fΠ\x1ePsi\x1fΨ\x1e\
ReverseUpEquilibrium\x1f⥯\x1eRho\x1fΡ\x1eRightDownTeeVector\x1f⥝\x1e\
RightDownVectorBar\x1f⥕\x1eRightTeeVector\x1f⥛\x1eRightTriangleBar\x1f⧐\x1e\
RightUpDownVector\x1f⥏\x1eRightUpTeeVector\x1f⥜\x1eRightUpVectorBar\x1f⥔\x1e\
RightVectorBar\x1f⥓\x1eRightarrow\x1f⇒\x1eRoundImplies\x1f⥰\x1eRrightarrow\x1f⇛\x1e\
Rsh\x1f↱\x1eRuleDelayed\x1f⧴\x1eSampi\x1fϠ\x1eSigma\x1fΣ\x1eStigma\x1fϚ\x1eSubset\x1f⋐\x1e\
Supset\x1f⋑\x1eTH\x1fÞ\x1eTau\x1fΤ\x1eTheta\x1fΘ\x1eUpArrowBar\x1f⤒\x1e\
UpEquilibrium\x1f⥮\x1eUparrow\x1f⇑\x1eUpdownarrow\x1f⇕\x1eUpsilon\x1fΥ\x1eVDash\x1f⊫\x1e\
Vdash\x1f⊩\x1eVert\x1f‖\x1eVvdash\x1f⊪\x1eXi\x1fΞ\x1eZeta\x1fΖ\x1e_\x1f_\x1eaa\x1få\x1e\
ae\x1fæ\x1ealeph\x1fℵ\x1eallequal\x1f≌\x1ealpha\x1fα\x1eamalg\x1f⨿\x1eangle\x1f∠\x1e\
approx\x1f≈\x1eapproxeq\x1f≊\x1eapproxnotequal\x1f≆\x1eaquarius\x1f♒\x1e\
arccos\x1farccos\x1earccosh\x1farccosh\x1earcsin\x1farcsin\x1earcsinh\x1farcsinh\x1e\
arctan\x1farctan\x1earctanh\x1farctanh\x1earies\x1f♈\x1earrowwaveleft\x1f↜\x1e\
arrowwaveright\x1f↝\x1east\x1f∗\x1easymp\x1f≍\x1ebackepsilon\x1f϶\x1ebackprime\x1f‵\x1e\
backsim\x1f∽\x1ebacksimeq\x1f⋍\x1ebackslash\x1f\\\x1ebarwedge\x1f⌅\x1ebecause\x1f∵\x1e\
beta\x1fβ\x1ebeth\x1fℶ\x1ebetween\x1f≬\x1ebigcap\x1f⋂\x1ebigcirc\x1f◯\x1ebigcup\x1f⋃\x1e\
bigoplus\x1f⊕\x1ebigotimes\x1f⊗\x1ebigtriangledown\x1f▽\x1ebigtriangleup\x1f△\x1e\
bigvee\x1f⋁\x1ebigwedge\x1f⋀\x1eblacklozenge\x1f⧫\x1eblacksquare\x1f▪\x1e\
blacktriangle\x1f▴\x1eblacktriangledown\x1f▾\x1eblacktriangleleft\x1f◂\x1e\
blacktriangleright\x1f▸\x1ebowtie\x1f⋈\x1eboxdot\x1f⊡\x1eboxminus\x1f⊟\x1eboxplus\x1f⊞\x1e\
boxtimes\x1f⊠\x1ebullet\x1f∙\x1ebumpeq\x1f≏\x1ecancer\x1f♋\x1ecap\x1f∩\x1e\
capricornus\x1f♑\x1ecdot\x1f·\x1ecdots\x1f⋯\x1echi\x1fχ\x1ecirc\x1f∘\x1ecirceq\x1f≗\x1e\
circlearrowleft\x1f↺\x1ecirclearrowright\x1f↻\x1ecircledS\x1fⓈ\x1ecircledast\x1f⊛\x1e\
circledcirc\x1f⊚\x1ecircleddash\x1f⊝\x1eclockoint\x1f⨏\x1eclwintegral\x1f∱\x1e\
complement\x1f∁\x1econg\x1f≅\x1ecoprod\x1f∐\x1ecos\x1fcos\x1ecosh\x1fcosh\x1ecup\x1f∪\x1e\
curlyeqprec\x1f⋞\x1ecurlyeqsucc\x1f⋟\x1ecurlyvee\x1f⋎\x1ecurlywedge\x1f⋏\x1e\
curvearrowleft\x1f↶\x1ecurvearrowright\x1f↷\x1ecyra\x1fа\x1ecyrabhch\x1fҽ\x1e\
cyrabhchdsc\x1fҿ\x1ecyrabhdze\x1fӡ\x1ecyrabhha\x1fҩ\x1ecyrae\x1fӕ\x1ecyrb\x1fб\x1e\
cyrbyus\x1fѫ\x1ecyrc\x1fц\x1ecyrch\x1fч\x1ecyrchldsc\x1fӌ\x1ecyrchrdsc\x1fҷ\x1e\
cyrchvcrs\x1fҹ\x1ecyrd\x1fд\x1ecyrdje\x1fђ\x1ecyrdze\x1fѕ\x1ecyrdzhe\x1fџ\x1ecyre\x1fе\x1e\
cyrerev\x1fэ\x1ecyrery\x1fы\x1ecyrf\x1fф\x1ecyrfita\x1fѳ\x1ecyrg\x1fг\x1ecyrgdsc\x1fӷ\x1e\
cyrgdschcrs\x1fӻ\x1ecyrghcrs\x1fғ\x1ecyrghk\x1fҕ\x1ecyrgup\x1fґ\x1ecyrh\x1fх\x1e\
cyrhdsc\x1fҳ\x1ecyrhhcrs\x1fӿ\x1ecyrhhk\x1fӽ\x1ecyrhrdsn\x1fъ\x1ecyri\x1fи\x1e\
cyrie\x1fє\x1ecyrii\x1fі\x1ecyrishrt\x1fй\x1ecyrizh\x1fѵ\x1ecyrje\x1fј\x1ecyrk\x1fк\x1e\
cyrkbeak\x1fҡ\x1ecyrkdsc\x1fқ\x1ecyrkhcrs\x1fҟ\x1ecyrkhk\x1fӄ\x1ecyrkvcrs\x1fҝ\x1e\
cyrl\x1fл\x1ecyrldsc\x1fӆ\x1ecyrlje\x1fљ\x1ecyrm\x1fм\x1ecyrmdsc\x1fӎ\x1ecyrn\x1fн\x1e\
cyrndsc\x1fң\x1ecyrng\x1fҥ\x1ecyrnhk\x1fӈ\x1ecyrnje\x1fњ\x1ecyro\x1fо\x1ecyrotld\x1fө\x1e\
cyrp\x1fп\x1ecyrphk\x1fҧ\x1ecyrr\x1fр\x1ecyrrtick\x1fҏ\x1ecyrs\x1fс\x1ecyrschwa\x1fә\x1e\
cyrsdsc\x1fҫ\x1ecyrsemisftsn\x1fҍ\x1ecyrsftsn\x1fь\x1ecyrsh\x1fш\x1ecyrshch\x1fщ\x1e\
cyrshha\x1fһ\x1ecyrt\x1fт\x1ecyrtdsc\x1fҭ\x1ecyrtetse\x1fҵ\x1ecyrtshe\x1fћ\x1e\
cyru\x1fу\x1ecyrushrt\x1fў\x1ecyrv\x1fв\x1ecyry\x1fү\x1ecyrya\x1fя\x1ecyryat\x1fѣ\x1e\
cyryhcrs\x1fұ\x1ecyryi\x1fї\x1ecyryo\x1fё\x1ecyryu\x1fю\x1ecyrz\x1fз\x1ecyrzdsc\x1fҙ\x1e\
cyrzh\x1fж\x1ecyrzhdsc\x1fҗ\x1edag\x1f†\x1edagger\x1f†\x1edaleth\x1fℸ\x1edashv\x1f⊣\x1e\
dblarrowupdown\x1f⇅\x1eddddot\x1f\u{20dc}\x1edddot\x1f\u{20db}\x1eddots\x1f⋱\x1e\
delta\x1fδ\x1edh\x1fð\x1ediagup\x1f╱\x1ediamond\x1f♢\x1edigamma\x1fϝ\x1ediv\x1f÷\x1e\
divideontimes\x1f⋇\x1edj\x1fđ\x1edoteq\x1f≐\x1edoteqdot\x1f≑\x1edotplus\x1f∔\x1e\
dots\x1f…\x1edotsb\x1f…\x1edotsc\x1f…\x1edotsi\x1f…\x1edotsm\x1f…\x1edotso\x1f…\x1e\
downarrow\x1f↓\x1edowndownarrows\x1f⇊\x1edownharpoonleft\x1f⇃\x1edownharpoonright\x1f⇂\x1e\
downslopeellipsis\x1f⋱\x1eeighthnote\x1f♪\x1eell\x1fℓ\x1eemptyset\x1f∅\x1e\
enskip\x1f\u{2002}\x1eepsilon\x1fϵ\x1eeqcirc\x1f≖\x1eeqslantgtr\x1f⪖\x1e\
eqslantless\x1f⪕\x1eequiv\x1f≡\x1eestimates\x1f≙\x1eeta\x1fη\x1eeth\x1fƪ\x1e\
exists\x1f∃\x1eexp\x1fexp\x1efallingdotseq\x1f≒\x1eflat\x1f♭\x1eforall\x1f∀\x1e\
forcesextra\x1f⊨\x1efrown\x1f⌢\x1egamma\x1fγ\x1ege\x1f≥\x1egemini\x1f♊\x1egeq\x1f≥\x1e\
geqq\x1f≧\x1egeqslant\x1f⩾\x1egg\x1f≫\x1egimel\x1fℷ\x1egnapprox\x1f⪊\x1egneq\x1f⪈\x1e\
gneqq\x1f≩\x1egnsim\x1f⋧\x1egreaterequivlnt\x1f≳\x1egtrapprox\x1f⪆\x1egtrdot\x1f⋗\x1e\
gtreqless\x1f⋛\x1egtreqqless\x1f⪌\x1egtrless\x1f≷\x1egtrsim\x1f≳\x1eguillemotleft\x1f«\x1e\
guillemotright\x1f»\x1eguilsinglleft\x1f‹\x1eguilsinglright\x1f›\x1ehbar\x1fħ\x1e\
hermitconjmatrix\x1f⊹\x1ehomothetic\x1f∻\x1ehookleftarrow\x1f↩\x1ehookrightarrow\x1f↪\x1e\
hslash\x1fℏ\x1ei\x1fı\x1eid\x1f𝕀\x1eiddots\x1f⋰\x1eiiint\x1f∭\x1eiint\x1f∬\x1eij\x1fĳ\x1e\
image\x1f⊷\x1ein\x1f∈\x1einf\x1finf\x1einfty\x1f∞\x1eint\x1f∫\x1eintercal\x1f⊺\x1e\
iota\x1fι\x1ej\x1fȷ\x1ejupiter\x1f♃\x1ekappa\x1fκ\x1el\x1fł\x1elVert\x1f‖\x1e\
lambda\x1fλ\x1elangle\x1f⟨\x1elazysinv\x1f∾\x1elbrace\x1f{\x1elceil\x1f⌈\x1eldots\x1f…\x1e\
le\x1f≤\x1eleftarrow\x1f←\x1eleftarrowtail\x1f↢\x1eleftharpoondown\x1f↽\x1e\
leftharpoonup\x1f↼\x1eleftleftarrows\x1f⇇\x1eleftrightarrow\x1f↔\x1e\
leftrightarrows\x1f⇆\x1eleftrightharpoons\x1f⇋\x1eleftrightsquigarrow\x1f↭\x1e\
leftthreetimes\x1f⋋\x1eleo\x1f♌\x1eleq\x1f≤\x1eleqq\x1f≦\x1eleqslant\x1f⩽\x1e\
lessapprox\x1f⪅\x1elessdot\x1f⋖\x1elesseqgtr\x1f⋚\x1elesseqqgtr\x1f⪋\x1e\
lessequivlnt\x1f≲\x1elessgtr\x1f≶\x1elesssim\x1f≲\x1elfloor\x1f⌊\x1elibra\x1f♎\x1e\
lim\x1flim\x1eliminf\x1flim inf\x1elimsup\x1flim sup\x1ell\x1f≪\x1ellcorner\x1f⌞\x1e\
lmoustache\x1f⎰\x1eln\x1fln\x1elnapprox\x1f⪉\x1elneq\x1f⪇\x1elneqq\x1f≨\x1elnot\x1f¬\x1e\
lnsim\x1f⋦\x1elog\x1flog\x1elongleftarrow\x1f⟵\x1elongleftrightarrow\x1f⟷\x1e\
longmapsto\x1f⟼\x1elongrightarrow\x1f⟶\x1elooparrowleft\x1f↫\x1elooparrowright\x1f↬\x1e\
lozenge\x1f◊\x1elrcorner\x1f⌟\x1eltimes\x1f⋉\x1elvert\x1f|\x1emale\x1f♂\x1emapsto\x1f↦\x1e\
max\x1fmax\x1emeasuredangle\x1f∡\x1emercury\x1f☿\x1emho\x1f℧\x1emid\x1f|\x1emin\x1fmin\x1e\
mp\x1f∓\x1emu\x1fμ\x1emultimap\x1f⊸\x1enLeftarrow\x1f⇍\x1enLeftrightarrow\x1f⇎\x1e\
nRightarrow\x1f⇏\x1enVDash\x1f⊯\x1enVdash\x1f⊮\x1enabla\x1f∇\x1enatural\x1f♮\x1e\
nearrow\x1f↗\x1eneptune\x1f♆\x1eneq\x1f≠\x1enexists\x1f∄\x1eng\x1fŋ\x1engeq\x1f≱\x1e\
ngtr\x1f≯\x1eni\x1f∋\x1enleftarrow\x1f↚\x1enleftrightarrow\x1f↮\x1enleq\x1f≰\x1e\
nless\x1f≮\x1enmid\x1f∤\x1enolinebreak\x1f\u{2060}\x1enotgreaterless\x1f≹\x1e\
notin\x1f∉\x1enotlessgreater\x1f≸\x1enparallel\x1f∦\x1enprec\x1f⊀\x1enrightarrow\x1f↛\x1e\
nsubseteq\x1f⊈\x1ensucc\x1f⊁\x1ensupseteq\x1f⊉\x1entriangleleft\x1f⋪\x1e\
ntrianglelefteq\x1f⋬\x1entriangleright\x1f⋫\x1entrianglerighteq\x1f⋭\x1enu\x1fν\x1e\
nvDash\x1f⊭\x1envdash\x1f⊬\x1enwarrow\x1f↖\x1eo\x1fø\x1eodot\x1f⊙\x1eoe\x1fœ\x1e\
oint\x1f∮\x1eomega\x1fω\x1eomicron\x1fο\x1eominus\x1f⊖\x1eopenbracketleft\x1f〚\x1e\
openbracketright\x1f〛\x1eoplus\x1f⊕\x1eoriginal\x1f⊶\x1eoslash\x1f⊘\x1eotimes\x1f⊗\x1e\
parallel\x1f∥\x1epartial\x1f∂\x1eperp\x1f⊥\x1eperspcorrespond\x1f⩞\x1ephi\x1fϕ\x1e\
pi\x1fπ\x1episces\x1f♓\x1epitchfork\x1f⋔\x1epluto\x1f♇\x1epm\x1f±\x1eprec\x1f≺\x1e\
precapprox\x1f⪷\x1epreccurlyeq\x1f≼\x1eprecedesnotsimilar\x1f⋨\x1epreceq\x1f≼\x1e\
precnapprox\x1f⪹\x1eprecneqq\x1f⪵\x1eprecsim\x1f≾\x1eprime\x1f'\x1eprod\x1f∏\x1e\
propto\x1f∝\x1epsi\x1fψ\x1eqquad\x1f    \x1equad\x1f  \x1equarternote\x1f♩\x1e\
quotedblbase\x1f„\x1equotesinglbase\x1f‚\x1erVert\x1f‖\x1erangle\x1f⟩\x1erbrace\x1f}\x1e\
rceil\x1f⌉\x1erecorder\x1f⌕\x1erfloor\x1f⌋\x1erho\x1fρ\x1erightangle\x1f∟\x1e\
rightanglearc\x1f⊾\x1erightarrow\x1f→\x1erightarrowtail\x1f↣\x1erightharpoondown\x1f⇁\x1e\
rightharpoonup\x1f⇀\x1erightleftarrows\x1f⇄\x1erightleftharpoons\x1f⇌\x1e\
rightmoon\x1f☾\x1erightrightarrows\x1f⇉\x1erightsquigarrow\x1f⇝\x1e\
rightthreetimes\x1f⋌\x1erisingdotseq\x1f≓\x1ermoustache\x1f⎱\x1ertimes\x1f⋊\x1e\
rvert\x1f|\x1esagittarius\x1f♐\x1esaturn\x1f♄\x1escorpio\x1f♏\x1esearrow\x1f↘\x1e\
setminus\x1f∖\x1esharp\x1f♯\x1esigma\x1fσ\x1esim\x1f∼\x1esimeq\x1f≃\x1esin\x1fsin\x1e\
sinh\x1fsinh\x1esmallsetminus\x1f∖\x1esmile\x1f⌣\x1esphericalangle\x1f∢\x1esqcap\x1f⊓\x1e\
sqcup\x1f⊔\x1esqrint\x1f⨖\x1esqsubset\x1f⊏\x1esqsubseteq\x1f⊑\x1esqsupset\x1f⊐\x1e\
sqsupseteq\x1f⊒\x1esquare\x1f□\x1ess\x1fß\x1estar\x1f⋆\x1estarequal\x1f≛\x1e\
subset\x1f⊂\x1esubseteq\x1f⊆\x1esubseteqq\x1f⫅\x1esubsetneq\x1f⊊\x1esubsetneqq\x1f⫋\x1e\
succ\x1f≻\x1esuccapprox\x1f⪸\x1esucccurlyeq\x1f≽\x1esucceq\x1f≽\x1esuccnapprox\x1f⪺\x1e\
succneqq\x1f⪶\x1esuccnsim\x1f⋩\x1esuccsim\x1f≿\x1esum\x1f∑\x1esup\x1fsup\x1e\
supset\x1f⊃\x1esupseteq\x1f⊇\x1esupseteqq\x1f⫆\x1esupsetneq\x1f⊋\x1esupsetneqq\x1f⫌\x1e\
surd\x1f√\x1esurfintegral\x1f∯\x1eswarrow\x1f↙\x1etan\x1ftan\x1etanh\x1ftanh\x1e\
tau\x1fτ\x1etaurus\x1f♉\x1etextTheta\x1fϴ\x1etextacutedbl\x1f˝\x1etextasciiacute\x1f´\x1e\
textasciibreve\x1f˘\x1etextasciicaron\x1fˇ\x1etextasciicircum\x1fˆ\x1e\
textasciidieresis\x1f¨\x1etextasciigrave\x1f`\x1etextasciimacron\x1f¯\x1e\
textasciitilde\x1f~\x1etextasteriskcentered\x1f⁎\x1etextbackslash\x1f\\\x1e\
textbaht\x1f฿\x1etextbigcircle\x1f◯\x1etextblank\x1f␢\x1etextbrokenbar\x1f¦\x1e\
textbullet\x1f•\x1etextcelsius\x1f℃\x1etextcent\x1f¢\x1etextcircledP\x1f℗\x1e\
textcolonmonetary\x1f₡\x1etextcompwordmark\x1f\u{200c}\x1etextcopyright\x1f©\x1e\
textcurrency\x1f¤\x1etextdagger\x1f†\x1etextdaggerdbl\x1f‡\x1etextdegree\x1f°\x1e\
textdiscount\x1f⁒\x1etextdiv\x1f÷\x1etextdollar\x1f$\x1etextdong\x1f₫\x1e\
textdoublepipe\x1fǂ\x1etextdownarrow\x1f↓\x1etextellipsis\x1f…\x1etextemdash\x1f—\x1e\
textendash\x1f–\x1etextestimated\x1f℮\x1etexteuro\x1f€\x1etextexclamdown\x1f¡\x1e\
textflorin\x1fƒ\x1etextfrac\x1f%s/%s\x1etextfractionsolidus\x1f⁄\x1etextglotstop\x1fʔ\x1e\
texthvlig\x1fƕ\x1etextinterrobang\x1f‽\x1etextlangle\x1f〈\x1etextleftarrow\x1f←\x1e\
textlira\x1f₤\x1etextlnot\x1f¬\x1etextmho\x1f℧\x1etextmp\x1f∓\x1etextmu\x1fµ\x1e\
textmusicalnote\x1f♪\x1etextnaira\x1f₦\x1etextnrleg\x1fƞ\x1etextnumero\x1f№\x1e\
textohm\x1fΩ\x1etextonehalf\x1f½\x1etextonequarter\x1f¼\x1etextonesuperior\x1f¹\x1e\
textopenbullet\x1f◦\x1etextordfeminine\x1fª\x1etextordmasculine\x1fº\x1e\
textparagraph\x1f¶\x1etextperiodcentered\x1f˙\x1etextpertenthousand\x1f‱\x1e\
textperthousand\x1f‰\x1etextpeso\x1f₱\x1etextphi\x1fɸ\x1etextpm\x1f±\x1e\
textquestiondown\x1f¿\x1etextquotedblleft\x1f“\x1etextquotedblright\x1f”\x1e\
textquoteleft\x1f‘\x1etextquoteright\x1f’\x1etextquotesingle\x1f'\x1etextrangle\x1f〉\x1e\
textrecipe\x1f℞\x1etextreferencemark\x1f※\x1etextregistered\x1f®\x1e\
textrightarrow\x1f→\x1etextschwa\x1fə\x1etextsection\x1f§\x1etextservicemark\x1f℠\x1e\
textsterling\x1f£\x1etexttheta\x1fθ\x1etextthreequarters\x1f¾\x1e\
textthreesuperior\x1f³\x1etexttildelow\x1f˜\x1etexttimes\x1f×\x1etexttrademark\x1f™\x1e\
textturnk\x1fʞ\x1etexttwosuperior\x1f²\x1etextuparrow\x1f↑\x1etextvartheta\x1fϑ\x1e\
textvisiblespace\x1f␣\x1etextwon\x1f₩\x1etextyen\x1f¥\x1eth\x1fþ\x1etherefore\x1f∴\x1e\
theta\x1fθ\x1etildetrpl\x1f≋\x1etimes\x1f×\x1eto\x1f→\x1etoday\x1fNovember 21, 2026\x1e\
top\x1f⊤\x1etriangledown\x1f▿\x1etriangleleft\x1f◃\x1etrianglelefteq\x1f⊴\x1e\
triangleq\x1f≜\x1etriangleright\x1f▹\x1etrianglerighteq\x1f⊵\x1etruestate\x1f⊧\x1e\
twoheadleftarrow\x1f↞\x1etwoheadrightarrow\x1f↠\x1eudots\x1f⋰\x1eulcorner\x1f⌜\x1e\
uparrow\x1f↑\x1eupdownarrow\x1f↕\x1eupharpoonleft\x1f↿\x1eupharpoonright\x1f↾\x1e\
uplus\x1f⊎\x1eupsilon\x1fυ\x1eupslopeellipsis\x1f⋰\x1eupuparrows\x1f⇈\x1euranus\x1f♅\x1e\
urcorner\x1f⌝\x1evarepsilon\x1fε\x1evarkappa\x1fϰ\x1evarnothing\x1f∅\x1e\
varperspcorrespond\x1f⌆\x1evarphi\x1fφ\x1evarpi\x1fϖ\x1evarrho\x1fϱ\x1evarsigma\x1fς\x1e\
vartheta\x1fϑ\x1evartriangle\x1f▵\x1evartriangleleft\x1f⊲\x1evartriangleright\x1f⊳\x1e\
vdash\x1f⊢\x1evdots\x1f⋮\x1evee\x1f∨\x1eveebar\x1f⊻\x1evenus\x1f♀\x1evert\x1f|\x1e\
verymuchgreater\x1f⋙\x1everymuchless\x1f⋘\x1evirgo\x1f♍\x1evolintegral\x1f∰\x1e\
wedge\x1f∧\x1ewp\x1f℘\x1ewr\x1f≀\x1exi\x1fξ\x1ezeta\x1fζ\x1e{\x1f{\x1e}\x1f}\x1e";

/// Replacement text for an argument-less macro, if pylatexenc knows it.
pub(super) fn symbol(name: &str) -> Option<&'static str> {
    TABLE.split('\x1e').find_map(|entry| {
        let (key, value) = entry.split_once('\x1f')?;
        (key == name).then_some(value)
    })
}

/// Letter-like exceptions of the math alphabets (pylatexenc `_fmt_math_style_exceptions`).
pub(super) const SCRIPT: &[(char, char)] = &[
    ('B', '\u{212c}'),
    ('E', '\u{2130}'),
    ('F', '\u{2131}'),
    ('H', '\u{210b}'),
    ('I', '\u{2110}'),
    ('L', '\u{2112}'),
    ('M', '\u{2133}'),
    ('R', '\u{211b}'),
    ('e', '\u{212f}'),
    ('g', '\u{210a}'),
    ('o', '\u{2134}'),
];
pub(super) const FRAKTUR: &[(char, char)] = &[
    ('C', '\u{212d}'),
    ('H', '\u{210c}'),
    ('I', '\u{2111}'),
    ('R', '\u{211c}'),
    ('Z', '\u{2128}'),
];
pub(super) const DOUBLESTRUCK: &[(char, char)] = &[
    ('C', '\u{2102}'),
    ('H', '\u{210d}'),
    ('N', '\u{2115}'),
    ('P', '\u{2119}'),
    ('Q', '\u{211a}'),
    ('R', '\u{211d}'),
    ('Z', '\u{2124}'),
];

/// pylatexenc's `_fmt_math_style_char` applied to every char.
pub(super) fn styled(text: &str, upper: u32, lower: u32, exceptions: &[(char, char)]) -> String {
    text.chars()
        .map(|c| {
            if let Some(&(_, z)) = exceptions.iter().find(|(k, _)| *k == c) {
                return z;
            }
            let mapped = match c {
                'A'..='Z' => char::from_u32(upper + (c as u32 - 'A' as u32)),
                'a'..='z' => char::from_u32(lower + (c as u32 - 'a' as u32)),
                _ => None,
            };
            mapped.unwrap_or(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::symbol;

    #[test]
    fn known_symbols() {
        assert_eq!(symbol("pi"), Some("\u{3c0}"));
        assert_eq!(symbol("cdot"), Some("\u{b7}"));
        assert_eq!(symbol("infty"), Some("\u{221e}"));
        assert_eq!(symbol("nosuchmacro"), None);
    }
}
