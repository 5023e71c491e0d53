"""ckptkit's bridges to other tools: what it hands to frameworks and browsers, built on
the operations below it and imported only by the commands or callers that ask for them
(`import ckptkit` loads none of it). view: `ckptkit view`, a checkpoint as a web page.
"""
